"""The params schema: the committed file is valid, and every kind of bad value is named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from stages.params import PARAMS_FILE, ParamsError, load_params, validate_params

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return yaml.safe_load((REPOSITORY / PARAMS_FILE).read_text())


def with_change(raw: dict, section: str, key: str, value: object) -> dict:
    changed = copy.deepcopy(raw)
    changed[section][key] = value
    return changed


def test_committed_params_are_valid() -> None:
    params = load_params(REPOSITORY / PARAMS_FILE)
    assert params.prepare.val_fraction == 0.2
    assert params.prepare.seed == 42
    assert params.train.hidden_units == [128, 64]
    assert params.train.epochs == 20
    assert params.data.md5 == "c58f30108f718f92721af3b95e74349a"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "epochs", -3, "train.epochs = -3: Input should be greater than 0"),
        ("train", "epochs", 0, "train.epochs = 0: Input should be greater than 0"),
        ("prepare", "val_fraction", 1.0, "prepare.val_fraction = 1.0: Input should be less than 1"),
        ("prepare", "val_fraction", 0, "prepare.val_fraction = 0: Input should be greater than 0"),
        ("prepare", "scaling", "minmax", "prepare.scaling = 'minmax': Input should be 'per_pixel'"),
        ("train", "epochs", "20", "train.epochs = '20': Input should be a valid integer"),
        ("train", "epochs", 2.5, "train.epochs = 2.5: Input should be a valid integer"),
        ("train", "horizontal_flip", "yes", "train.horizontal_flip = 'yes': Input should be"),
        ("train", "hidden_units", [128, -1], "train.hidden_units.1 = -1: Input should be greater"),
        ("data", "md5", "not-a-hash", "data.md5 = 'not-a-hash': String should match pattern"),
        ("train", "distribute", "horovod", "train.distribute = 'horovod': Input should be 'none'"),
        ("train", "lerning_rate", 0.1, "train.lerning_rate is not a known key"),
    ],
)
def test_bad_value_is_named_in_one_line(
    raw_params: dict, section: str, key: str, value: object, message: str
) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(with_change(raw_params, section, key, value))
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("params.yaml: ")
    assert message in text


def test_missing_key_and_unknown_section_are_named(raw_params: dict) -> None:
    raw = copy.deepcopy(raw_params)
    del raw["train"]["epochs"]
    raw["extra"] = {}
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    lines = str(caught.value).splitlines()
    assert "params.yaml: train.epochs is missing" in lines
    assert "params.yaml: extra is not a known key" in lines


def test_int_is_accepted_where_a_float_is_expected(raw_params: dict) -> None:
    params = validate_params(with_change(raw_params, "train", "learning_rate", 1))
    assert params.train.learning_rate == 1.0


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
