"""The params schema: the committed file is valid, and every kind of bad value is named."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import get_args

import pytest
from conftest import (
    REPOSITORY,
    TEST_PARAMS,
    params_for_tests,
    raw_params_for_tests,
    run_stage,
    write_params,
)
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

from stages.dataset import SCALINGS
from stages.inference import ACTIVATIONS
from stages.params import (
    LOCAL_COPY_VARIABLE,
    MAX_BACKPROP_OPERATIONS,
    MAX_BATCH_ACTIVATIONS,
    MAX_MLP_PARAMETERS,
    VALID_RECORD,
    Params,
    ParamsError,
    archive_identity,
    parse_params,
    read_params_file,
    validate_params,
)


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return raw_params_for_tests()


def with_change(raw: dict, section: str, key: str, value: object) -> dict:
    changed = copy.deepcopy(raw)
    changed[section][key] = value
    return changed


def test_committed_params_are_valid() -> None:
    committed = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=REPOSITORY, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    validate_params(parse_params(committed))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "epochs", -3, "train.epochs = -3: Input should be greater than or equal to 1"),
        ("train", "epochs", 10**6, "train.epochs = 1000000: Input should be less than or equal"),
        ("prepare", "val_fraction", 1.0, "prepare.val_fraction = 1.0: Input should be less than"),
        ("prepare", "val_fraction", 0, "prepare.val_fraction = 0: Input should be greater than 0"),
        ("prepare", "scaling", "minmax", "prepare.scaling = 'minmax': Input should be 'unit'"),
        ("prepare", "zca_epsilon", 0.0, "prepare.zca_epsilon = 0.0: Input should be greater"),
        ("train", "epochs", "20", "train.epochs = '20': Input should be a valid integer"),
        ("train", "epochs", 2.5, "train.epochs = 2.5: Input should be a valid integer"),
        ("train", "horizontal_flip", "yes", "train.horizontal_flip = 'yes': Input should be"),
        ("train", "hidden_units", [128, -1], "train.hidden_units.1 = -1: Input should be greater"),
        ("train", "max_shift", 9, "train.max_shift = 9: Input should be less than or equal to 8"),
        ("train", "label_smoothing", 1.0, "train.label_smoothing = 1.0: Input should be less"),
        ("train", "batch_size", 10**7, "train.batch_size = 10000000: Input should be less"),
        ("data", "md5", "not-a-hash", "data.md5 = 'not-a-hash': String should match pattern"),
        ("data", "retries", 1000, "data.retries = 1000: Input should be less than or equal to 20"),
        ("train", "distribute", "horovod", "train.distribute = 'horovod': Input should be 'none'"),
        ("train", "lerning_rate", 0.1, "train.lerning_rate is not a known key"),
        ("plots", "dpi", 20000, "plots.dpi = 20000: Input should be less than or equal to 400"),
        ("evaluate", "batch_size", 0, "evaluate.batch_size = 0: Input should be greater than"),
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


def test_warmup_must_end_before_training_does(raw_params: dict) -> None:
    changed = with_change(raw_params, "train", "warmup_epochs", raw_params["train"]["epochs"])
    with pytest.raises(ParamsError, match=r"params.yaml: train: warmup_epochs \(.*\) must be less"):
        validate_params(changed)


def test_uppercase_md5_is_normalised(raw_params: dict) -> None:
    params = validate_params(
        with_change(raw_params, "data", "md5", "C58F30108F718F92721AF3B95E74349A")
    )
    assert params.data.md5 == "c58f30108f718f92721af3b95e74349a"


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
        read_params_file(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        read_params_file(broken)


PARAMS_OUTPUTS = ["--valid", "out/valid.txt", "--archive", "out/archive.json"]


def test_params_stage_fails_on_a_typo_in_a_key_no_stage_reads(tmp_path: Path) -> None:
    write_params(tmp_path)
    assert run_stage("params", PARAMS_OUTPUTS, tmp_path).stderr == ""
    text = (tmp_path / "params.yaml").read_text().replace("  retries:", "  retires:")
    (tmp_path / "params.yaml").write_text(text)
    result = run_stage("params", PARAMS_OUTPUTS, tmp_path, check=False)
    assert result.returncode == 1
    assert set(result.stderr.splitlines()) == {
        "error: params.yaml: data.retires is not a known key",
        "error: params.yaml: data.retries is missing",
    }


def test_every_key_is_described_in_the_schema() -> None:
    sections = Params.model_fields
    for section, field in sections.items():
        for key, entry in field.annotation.model_fields.items():
            assert entry.description, f"{section}.{key} has no description"


def with_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def params_with_line(folder: Path, old: str, new: str) -> Path:
    """The tests' params.yaml, as written, with one line changed, in ``folder``."""
    path = folder / "params.yaml"
    path.write_text(with_line(TEST_PARAMS.read_text(), old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("train:\n  seed: 42\n", "train:\n  seed: 010\n", 10),
        ("  epochs: 20\n", "  epochs: 1:05\n", "1:05"),
        ("  learning_rate: 0.008\n", "  learning_rate: 1e-3\n", 0.001),
        ("  restore_best_epoch: true\n", "  restore_best_epoch: yes\n", "yes"),
    ],
    ids=["leading zero", "sexagesimal", "exponent without a dot", "yes"],
)
def test_params_read_as_dvc_reads_them(old: str, new: str, expected: object) -> None:
    text = with_line(TEST_PARAMS.read_text(), old, new)
    ours = parse_params(text)
    # DVC's own reader of params.yaml, which dvc.lock and `dvc exp show` record.
    theirs = dvc_parse_yaml(text, "params.yaml")
    assert ours == theirs
    key = old.removeprefix("train:\n").split(":", maxsplit=1)[0].strip()
    assert ours["train"][key] == expected


def test_leading_zero_trains_with_the_value_dvc_records(tmp_path: Path) -> None:
    path = params_with_line(tmp_path, "train:\n  seed: 42\n", "train:\n  seed: 010\n")
    assert read_params_file(path).params.train.seed == 10


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  epochs: 20\n",
            "  epochs: 1:05\n",
            "train.epochs = '1:05': Input should be a valid integer",
        ),
        (
            "  restore_best_epoch: true\n",
            "  restore_best_epoch: yes\n",
            "train.restore_best_epoch = 'yes': Input should be a valid boolean",
        ),
    ],
)
def test_yaml_1_1_spellings_are_refused_as_dvc_reads_them(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = params_with_line(tmp_path, old, new)
    with pytest.raises(ParamsError) as caught:
        read_params_file(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_key_given_twice_is_refused_in_one_line(tmp_path: Path) -> None:
    path = params_with_line(tmp_path, "  epochs: 20\n", "  epochs: 20\n  epochs: 30\n")
    with pytest.raises(ParamsError) as caught:
        read_params_file(path)
    text = str(caught.value)
    assert "\n" not in text
    lines = path.read_text().splitlines()
    line = 1 + next(
        number for number, entry in enumerate(lines) if entry.startswith("  epochs: 30")
    )
    assert text.startswith(f'{path}: line {line}: duplicate key "epochs" with value "30"')
    assert text.endswith("; give each key once")


def test_a_relative_archive_path_is_refused_with_what_to_write(raw_params: dict) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(with_change(raw_params, "data", "archive", "../data/cifar.tar.gz"))
    assert str(caught.value) == (
        "params.yaml: data.archive = '../data/cifar.tar.gz': a relative path, which names "
        "another file in the copy of the repository that a queued experiment runs in; write "
        "it absolute, for example -S data.archive=$(realpath ../data/cifar.tar.gz)"
    )


def test_a_file_changed_after_it_was_read_is_refused(tmp_path: Path) -> None:
    path = write_params(tmp_path) / "params.yaml"
    params_file = read_params_file(path)
    params_file.check_unchanged()
    path.write_text(path.read_text().replace("epochs: 20", "epochs: 2"))
    with pytest.raises(ParamsError, match=r"params\.yaml changed while the stage ran"):
        params_file.check_unchanged()


def test_the_archive_is_identified_by_md5_or_by_the_local_files_state(tmp_path: Path) -> None:
    archive = tmp_path / "archive.tar.gz"
    archive.write_bytes(b"first")
    pinned = params_for_tests().data
    assert archive_identity(pinned, {}) == {"md5": pinned.md5}
    assert archive_identity(pinned, {LOCAL_COPY_VARIABLE: str(archive)}) == {"md5": pinned.md5}

    unpinned = params_for_tests({"data": {"md5": None, "archive": str(archive)}}).data
    before = archive_identity(unpinned, {})
    assert before["path"] == str(archive)
    assert before == archive_identity(unpinned, {})
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"other")
    replacement.replace(archive)
    assert archive_identity(unpinned, {}) != before

    from_url = params_for_tests({"data": {"md5": None}}).data
    assert archive_identity(from_url, {}) == {"url": from_url.url}
    assert archive_identity(from_url, {LOCAL_COPY_VARIABLE: str(archive)})["path"] == str(archive)
    with pytest.raises(ParamsError, match=rf"{LOCAL_COPY_VARIABLE} = 'x.tar.gz': a relative"):
        archive_identity(from_url, {LOCAL_COPY_VARIABLE: "x.tar.gz"})


def test_params_stage_records_a_valid_file_and_the_archive_identity(tmp_path: Path) -> None:
    write_params(tmp_path)
    run_stage("params", PARAMS_OUTPUTS, tmp_path)
    assert (tmp_path / "out" / "valid.txt").read_text() == VALID_RECORD
    identity = json.loads((tmp_path / "out" / "archive.json").read_text())
    assert identity == {"md5": params_for_tests().data.md5}


def test_the_mlp_parameter_count_is_keras_count(raw_params: dict) -> None:
    # tests/test_model.py checks 402,250 against Keras' own count for 3072-128-64-10.
    params = validate_params(with_change(raw_params, "train", "hidden_units", [128, 64]))
    assert params.train.parameter_count == 402_250


@pytest.mark.parametrize(
    ("section", "changes", "message"),
    [
        (
            "train",
            {"hidden_units": [8192] * 8},
            (
                "hidden_units = [8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192] makes an MLP of "
                f"495,075,338 parameters, more than the {MAX_MLP_PARAMETERS:,} this machine trains"
            ),
        ),
        (
            "train",
            {"hidden_units": [4096, 4096], "batch_size": 65536},
            (
                "batch_size = 65536 with hidden_units = [4096, 4096] makes 738,852,864 layer "
                f"values per batch, more than the {MAX_BATCH_ACTIVATIONS:,}"
            ),
        ),
        (
            "backprop",
            {"n_samples": 100_000, "n_inputs": 100, "n_hidden": 100, "descent_steps": 100_000},
            (
                "n_samples = 100000, n_inputs = 100, n_hidden = 100 and descent_steps = 100000 "
                "need about 3.7e+14 multiply-adds, more than the 2e+10 allowed"
            ),
        ),
        (
            "backprop",
            {"descent_steps": 100_000, "n_samples": 100_000},
            "need about 1.6e+12 multiply-adds",
        ),
    ],
)
def test_in_range_values_that_would_exhaust_the_machine_are_refused(
    raw_params: dict, section: str, changes: dict, message: str
) -> None:
    raw = copy.deepcopy(raw_params)
    raw[section].update(changes)
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    assert str(caught.value).startswith(f"params.yaml: {section}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_largest_allowed_sizes_fit_the_bounds(raw_params: dict) -> None:
    raw = copy.deepcopy(raw_params)
    raw["train"].update({"hidden_units": [4096, 4096, 4096], "batch_size": 16384})
    raw["backprop"].update({"n_samples": 100_000, "n_inputs": 2, "n_hidden": 3})
    params = validate_params(raw)
    assert params.train.parameter_count <= MAX_MLP_PARAMETERS
    assert params.backprop.operations <= MAX_BACKPROP_OPERATIONS


def test_data_parallel_needs_the_jax_backend(raw_params: dict) -> None:
    raw = copy.deepcopy(raw_params)
    raw["train"].update({"distribute": "data_parallel", "backend": "tensorflow"})
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    assert str(caught.value) == (
        "params.yaml: train: distribute = 'data_parallel' needs backend = 'jax', not 'tensorflow'"
    )


def test_the_choices_of_params_are_what_the_code_implements() -> None:
    # One list each, checked here rather than imported: params.py stays light to load.
    activations = get_args(
        Params.model_fields["train"].annotation.model_fields["activation"].annotation
    )
    assert set(activations) == set(ACTIVATIONS) - {"linear", "softmax"}
    scalings = get_args(
        Params.model_fields["prepare"].annotation.model_fields["scaling"].annotation
    )
    assert scalings == SCALINGS
