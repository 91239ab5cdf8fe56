"""The params schema: the committed file is valid and documented, every kind of bad value named."""

from __future__ import annotations

import copy
import inspect
import json
import re
from pathlib import Path

import pytest
from dvc.utils.hydra import apply_overrides
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml
from helpers import PARAMS_FILE, quick_train_params, run_stage, write_params
from models import example_preprocessing

from cifar10.archive import CLASS_NAMES
from cifar10.errors import ParamsError
from cifar10.model import build_model
from cifar10.params import (
    MAX_BACKPROP_OPERATIONS,
    MAX_BATCH_ACTIVATIONS,
    MAX_MLP_PARAMETERS,
    Params,
    parse_params,
    read_params,
    validate_params,
)
from stages.params import VALID_RECORD


@pytest.fixture(scope="module")
def raw_params() -> dict:
    """The committed params.yaml, parsed as the stages and DVC parse it."""
    return parse_params(PARAMS_FILE.read_text(), str(PARAMS_FILE))


def with_changes(raw: dict, section: str, changes: dict[str, object]) -> dict:
    changed = copy.deepcopy(raw)
    changed[section].update(changes)
    return changed


def refusal(raw: object) -> str:
    """The message validate_params refuses ``raw`` with."""
    with pytest.raises(ParamsError) as caught:
        validate_params(raw)
    return str(caught.value)


def test_the_committed_params_are_valid() -> None:
    read_params(PARAMS_FILE)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "epochs", -3, "train.epochs = -3: Input should be greater than or equal to 1"),
        ("train", "epochs", 10**6, "train.epochs = 1000000: Input should be less than or equal"),
        ("prepare", "val_fraction", 1.0, "prepare.val_fraction = 1.0: Input should be less than"),
        ("prepare", "val_fraction", 0, "prepare.val_fraction = 0: Input should be greater than 0"),
        ("prepare", "scaling", "minmax", "prepare.scaling = 'minmax': Input should be 'unit'"),
        ("prepare", "zca_epsilon", 0.0, "prepare.zca_epsilon = 0.0: Input should be greater"),
        ("prepare", "seed", 2**32, "prepare.seed = 4294967296: Input should be less than"),
        ("train", "epochs", "20", "train.epochs = '20': Input should be a valid integer"),
        ("train", "epochs", 2.5, "train.epochs = 2.5: Input should be a valid integer"),
        ("train", "epochs", None, "train.epochs = None: Input should be a valid integer"),
        ("train", "epochs", True, "train.epochs = True: Input should be a valid integer"),
        ("train", "learning_rate", True, "train.learning_rate = True: Input should be a valid"),
        ("train", "horizontal_flip", "yes", "train.horizontal_flip = 'yes': Input should be"),
        ("train", "hidden_units", [128, -1], "train.hidden_units.1 = -1: Input should be greater"),
        ("train", "hidden_units", [], "train.hidden_units = []: List should have at least 1"),
        ("train", "hidden_units", 128, "train.hidden_units = 128: Input should be a valid list"),
        ("train", "seeds", [], "train.seeds = []: List should have at least 1"),
        ("train", "seeds", 42, "train.seeds = 42: Input should be a valid list"),
        ("train", "seeds", [42, -1], "train.seeds.1 = -1: Input should be greater than"),
        (
            "train",
            "seeds",
            [42, 7, 42],
            "train.seeds = [42, 7, 42]: seeds [42] appear more than once",
        ),
        ("train", "max_shift", 9, "train.max_shift = 9: Input should be less than or equal to 8"),
        ("train", "label_smoothing", 1.0, "train.label_smoothing = 1.0: Input should be less"),
        ("train", "batch_size", 10**7, "train.batch_size = 10000000: Input should be less"),
        ("train", "activation", "Relu", "train.activation = 'Relu': Input should be 'relu'"),
        ("data", "md5", "not-a-hash", "data.md5 = 'not-a-hash': String should match pattern"),
        ("data", "url", "ftp://x", "data.url = 'ftp://x': String should match pattern"),
        ("data", "retries", 1000, "data.retries = 1000: Input should be less than or equal to 20"),
        ("data", "timeout_seconds", float("nan"), "data.timeout_seconds = nan: Input should be"),
        ("train", "distribute", "horovod", "train.distribute = 'horovod': Input should be 'none'"),
        ("train", "lerning_rate", 0.1, "train.lerning_rate is not a known key"),
        ("plots", "dpi", 20000, "plots.dpi = 20000: Input should be less than or equal to 400"),
        ("evaluate", "batch_size", 0, "evaluate.batch_size = 0: Input should be greater than"),
    ],
)
def test_a_bad_value_is_named_in_one_line(
    raw_params: dict, section: str, key: str, value: object, message: str
) -> None:
    text = refusal(with_changes(raw_params, section, {key: value}))
    assert "\n" not in text
    assert text.startswith("params.yaml: ")
    assert message in text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "params.yaml: (top level) = None: Input should be a valid dictionary"),
        ([1, 2], "params.yaml: (top level) = [1, 2]: Input should be a valid dictionary"),
    ],
    ids=["empty file", "a list"],
)
def test_a_file_that_is_no_mapping_is_named_in_one_line(raw: object, message: str) -> None:
    text = refusal(raw)
    assert "\n" not in text
    assert text.startswith(message)


def test_a_section_that_is_no_mapping_is_named(raw_params: dict) -> None:
    raw = {**raw_params, "train": 5}
    assert refusal(raw).startswith("params.yaml: train = 5: Input should be a valid dictionary")


def test_warmup_must_end_before_training_does(raw_params: dict) -> None:
    changed = with_changes(raw_params, "train", {"epochs": 4, "warmup_epochs": 4})
    assert refusal(changed) == (
        "params.yaml: train: warmup_epochs (4) must be less than epochs (4)"
    )


def test_an_uppercase_md5_is_normalised(raw_params: dict) -> None:
    changed = with_changes(raw_params, "data", {"md5": "C58F30108F718F92721AF3B95E74349A"})
    assert validate_params(changed).data.md5 == "c58f30108f718f92721af3b95e74349a"


def test_a_missing_key_and_an_unknown_section_are_named(raw_params: dict) -> None:
    raw = copy.deepcopy(raw_params)
    del raw["train"]["epochs"]
    raw["extra"] = {}
    lines = refusal(raw).splitlines()
    assert "params.yaml: train.epochs is missing" in lines
    assert "params.yaml: extra is not a known key" in lines


def test_an_int_is_accepted_where_a_float_is_expected(raw_params: dict) -> None:
    params = validate_params(with_changes(raw_params, "train", {"learning_rate": 1}))
    assert params.train.learning_rate == 1.0


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"params\.yaml: no such file"):
        read_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"broken\.yaml: not valid YAML") as caught:
        read_params(broken)
    assert "\n" not in str(caught.value)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"data:\n  url: caf\xe9\n")
    with pytest.raises(ParamsError, match=r"latin\.yaml: not UTF-8 text"):
        read_params(latin)


# Comments and layout ---------------------------------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?:[^#]*#(?P<trailing>.*))?")


def comment_blocks(text: str) -> dict[str, str | None]:
    """Each section's and key's comment: the block directly above it, or on its own line.

    Keys are "section" and "section.key"; a block ends at a blank line. None: a comment
    line of the block is not indented as its key is. A key right after a block list
    carries its comment on its line, since DVC drops a block that follows a list when it
    rewrites the file (test_dvcs_rewrite_keeps_every_comment).
    """
    blocks: dict[str, str | None] = {}
    comments: list[tuple[int, str]] = []
    section = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#"):
            comments.append((len(line) - len(stripped), stripped.removeprefix("#")))
            continue
        match = KEY_LINE.match(line)
        if match is not None:
            indent = len(match["indent"])
            if indent == 0:
                section = match["key"]
            name = match["key"] if indent == 0 else f"{section}.{match['key']}"
            aligned = all(column == indent for column, _ in comments)
            if match["trailing"] is not None:
                comments.append((indent, match["trailing"]))
            blocks[name] = " ".join(" ".join(words for _, words in comments).split())
            if not aligned:
                blocks[name] = None
        comments = []
    return blocks


def sections() -> dict[str, type]:
    return {name: field.annotation for name, field in Params.model_fields.items()}


def test_comment_blocks_are_read_from_above_each_key() -> None:
    text = (
        "# The file's header.\n\n# First section,\n#   in two lines.\nfirst:\n"
        "  # A key.\n  key: 1\n  undocumented: 2\n  # Misaligned\n    # block.\n  bad: 3\n"
    )
    assert comment_blocks(text) == {
        "first": "First section, in two lines.",
        "first.key": "A key.",
        "first.undocumented": "",
        "first.bad": None,
    }
    assert comment_blocks("first:\n  key: 1  # On its line.\n") == {
        "first": "",
        "first.key": "On its line.",
    }


def test_dvcs_rewrite_keeps_every_comment(tmp_path: Path) -> None:
    # `dvc exp run -S` rewrites params.yaml with DVC's own function: written as DVC writes
    # it back, the file keeps every comment, and only the values set change.
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_FILE.read_text())
    overrides = ["train.epochs=31", "train.seeds=[42,7,1]", "data.archive=/a/b.tar.gz"]
    for _ in range(2):
        apply_overrides(path, overrides)
    before, after = PARAMS_FILE.read_text(), path.read_text()
    assert comment_blocks(after) == comment_blocks(before)
    expected = parse_params(before)
    expected["train"] |= {"epochs": 31, "seeds": [42, 7, 1]}
    expected["data"]["archive"] = "/a/b.tar.gz"
    assert parse_params(after) == expected


def test_params_yaml_has_exactly_the_schemas_sections_and_keys(raw_params: dict) -> None:
    schema = {name: set(model.model_fields) for name, model in sections().items()}
    assert {name: set(values) for name, values in raw_params.items()} == schema


def test_each_key_is_commented_with_its_description_in_the_schema() -> None:
    blocks = comment_blocks(PARAMS_FILE.read_text())
    for section, model in sections().items():
        for key, field in model.model_fields.items():
            assert field.description, f"{section}.{key} has no description in the schema"
            expected = " ".join(field.description.split())
            assert blocks.get(f"{section}.{key}") == expected, f"{section}.{key}"


def test_each_section_is_commented_with_its_models_docstring() -> None:
    blocks = comment_blocks(PARAMS_FILE.read_text())
    for section, model in sections().items():
        first_line = inspect.cleandoc(model.__doc__ or "").splitlines()[0]
        assert blocks.get(section) == " ".join(first_line.split()), section


# Read as DVC reads it --------------------------------------------------------------------


def with_line(text: str, section: str, key: str, value: str) -> str:
    """``text`` with the line of ``section.key`` giving ``value``, spelled as given."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"{section}:\n")
    index = next(
        number for number in range(start + 1, len(lines)) if lines[number].startswith(f"  {key}:")
    )
    lines[index] = f"  {key}: {value}\n"
    return "".join(lines)


def write_params_text(folder: Path, section: str, key: str, value: str) -> Path:
    """The committed params.yaml, as written, with one value respelled, in ``folder``."""
    path = folder / "params.yaml"
    path.write_text(with_line(PARAMS_FILE.read_text(), section, key, value))
    return path


@pytest.mark.parametrize(
    ("key", "spelling", "expected"),
    [
        ("epochs", "010", 10),
        ("epochs", "1:05", "1:05"),
        ("learning_rate", "1e-3", 0.001),
        ("restore_best_epoch", "yes", "yes"),
        ("warmup_epochs", "0o17", 15),
        ("weight_decay", ".inf", float("inf")),
    ],
    ids=["leading zero", "sexagesimal", "exponent without a dot", "yes", "octal", "infinity"],
)
def test_params_are_read_as_dvc_reads_them(key: str, spelling: str, expected: object) -> None:
    text = with_line(PARAMS_FILE.read_text(), "train", key, spelling)
    ours = parse_params(text)
    # DVC's own reader of params.yaml, which dvc.lock and `dvc exp show` record.
    assert ours == dvc_parse_yaml(text, "params.yaml")
    assert ours["train"][key] == expected


def test_a_leading_zero_trains_with_the_value_dvc_records(tmp_path: Path) -> None:
    path = write_params_text(tmp_path, "train", "epochs", "020")
    assert read_params(path).params.train.epochs == 20


@pytest.mark.parametrize(
    ("key", "spelling", "message"),
    [
        ("epochs", "1:05", "train.epochs = '1:05': Input should be a valid integer"),
        (
            "restore_best_epoch",
            "yes",
            "train.restore_best_epoch = 'yes': Input should be a valid boolean",
        ),
    ],
)
def test_yaml_1_1_spellings_are_refused_as_dvc_reads_them(
    tmp_path: Path, key: str, spelling: str, message: str
) -> None:
    path = write_params_text(tmp_path, "train", key, spelling)
    with pytest.raises(ParamsError) as caught:
        read_params(path)
    assert str(caught.value) == f"{path}: {message}"


def test_a_key_given_twice_is_refused_in_one_line(tmp_path: Path) -> None:
    path = write_params_text(tmp_path, "train", "epochs", "20\n  epochs: 30")
    text = path.read_text()
    with pytest.raises(Exception, match="YAML file structure is corrupted"):
        dvc_parse_yaml(text, str(path))  # DVC refuses it too
    with pytest.raises(ParamsError) as caught:
        read_params(path)
    message = str(caught.value)
    assert "\n" not in message
    line = 1 + text.splitlines().index("  epochs: 30")
    assert message.startswith(f'{path}: line {line}: duplicate key "epochs" with value "30"')
    assert message.endswith("; give each key once")


def test_a_relative_archive_path_is_refused_with_what_to_write(raw_params: dict) -> None:
    changed = with_changes(raw_params, "data", {"archive": "../data/cifar.tar.gz"})
    assert refusal(changed) == (
        "params.yaml: data.archive = '../data/cifar.tar.gz': a relative path, which names "
        "another file in the copy of the repository that a queued experiment runs in; write "
        "it absolute, for example -S data.archive=$(realpath ../data/cifar.tar.gz)"
    )
    absolute = with_changes(raw_params, "data", {"archive": "/data/cifar.tar.gz"})
    assert validate_params(absolute).data.archive == "/data/cifar.tar.gz"


def test_a_file_changed_or_removed_after_it_was_read_is_refused(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"train": {"epochs": 20}}) / "params.yaml"
    params_file = read_params(path)
    path.write_bytes(path.read_bytes())  # written again, the same bytes: unchanged
    params_file.check_unchanged()
    path.write_text(path.read_text().replace("epochs: 20", "epochs: 2"))
    with pytest.raises(ParamsError, match=r"params\.yaml changed while the stage ran"):
        params_file.check_unchanged()
    path.unlink()
    with pytest.raises(ParamsError, match=r"params\.yaml changed while the stage ran"):
        params_file.check_unchanged()


# Bounds of the machine -------------------------------------------------------------------


def test_the_mlp_parameter_count_is_keras_count() -> None:
    hidden_units = [96, 48, 24]  # one Keras model (a second or two to build)
    model = build_model(
        example_preprocessing(),
        hidden_units,
        len(CLASS_NAMES),
        "relu",
        0.5,
        test_time_flip=True,
        seed=0,
    )
    assert quick_train_params(hidden_units=hidden_units).parameter_count == model.count_params()
    # The assignment's 3072-128-64-10, as its notebook's model.summary() counts it.
    assert quick_train_params(hidden_units=[128, 64]).parameter_count == 402_250


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
            {"n_samples": 100_000, "n_inputs": 2, "n_hidden": 3, "descent_steps": 100_000},
            "need about 1.6e+12 multiply-adds",
        ),
    ],
)
def test_in_range_values_that_would_exhaust_the_machine_are_refused(
    raw_params: dict, section: str, changes: dict, message: str
) -> None:
    text = refusal(with_changes(raw_params, section, changes))
    assert text.startswith(f"params.yaml: {section}: ")
    assert message in text
    assert "\n" not in text


def test_the_largest_allowed_sizes_fit_the_bounds(raw_params: dict) -> None:
    raw = with_changes(
        raw_params, "train", {"hidden_units": [4096, 4096, 4096], "batch_size": 16384}
    )
    raw["backprop"].update({"n_samples": 100_000, "n_inputs": 2, "n_hidden": 3,
                            "descent_steps": 300})  # fmt: skip
    params = validate_params(raw)
    assert params.train.parameter_count <= MAX_MLP_PARAMETERS
    assert params.backprop.operations <= MAX_BACKPROP_OPERATIONS


def test_data_parallel_needs_the_jax_backend(raw_params: dict) -> None:
    changed = with_changes(
        raw_params, "train", {"distribute": "data_parallel", "backend": "tensorflow"}
    )
    assert refusal(changed) == (
        "params.yaml: train: distribute = 'data_parallel' needs backend = 'jax', not 'tensorflow'"
    )
    on_jax = with_changes(raw_params, "train", {"distribute": "data_parallel", "backend": "jax"})
    assert validate_params(on_jax).train.distribute == "data_parallel"


# The params stage, as a process ----------------------------------------------------------

PARAMS_OUTPUTS = ["--valid", "out/valid.txt", "--archive", "out/archive.json"]
MD5 = "c58f30108f718f92721af3b95e74349a"


@pytest.mark.integration
def test_the_params_stage_fails_on_a_typo_in_a_key_no_stage_reads(tmp_path: Path) -> None:
    write_params(tmp_path)
    assert run_stage("params", PARAMS_OUTPUTS, tmp_path).stderr == ""
    path = tmp_path / "params.yaml"
    path.write_text(path.read_text().replace("  retries:", "  retires:"))
    result = run_stage("params", PARAMS_OUTPUTS, tmp_path, check=False)
    assert result.returncode == 1
    assert set(result.stderr.splitlines()) == {
        "error: params.yaml: data.retires is not a known key",
        "error: params.yaml: data.retries is missing",
    }


@pytest.mark.integration
def test_the_params_stage_records_a_valid_file_and_the_archive_identity(tmp_path: Path) -> None:
    write_params(tmp_path, {"data": {"md5": MD5, "archive": None}})
    run_stage("params", PARAMS_OUTPUTS, tmp_path)
    assert (tmp_path / "out" / "valid.txt").read_text() == VALID_RECORD
    identity = json.loads((tmp_path / "out" / "archive.json").read_text())
    assert identity == {"md5": MD5}


def test_params_nested_too_deeply_are_one_line() -> None:
    with pytest.raises(ParamsError) as caught:
        parse_params("train: " + "[" * 800 + "]" * 800 + "\n", "params.yaml")
    assert str(caught.value) == "params.yaml: nested too deeply to be params"
