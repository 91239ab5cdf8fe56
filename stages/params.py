"""The typed schema of ``params.yaml``, validated at the start of every stage.

Every section is a frozen pydantic model that forbids unknown keys, so a typo or a
bad value stops a stage before it does any work, with one line per problem that
names the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stages.cli import StageError

PARAMS_FILE = Path("params.yaml")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Md5 = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
# numpy's and scikit-learn's seeds are unsigned 32-bit integers.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Section(BaseModel):
    """Common configuration: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(Section):
    """Where the CIFAR-10 archive comes from and how it is checked."""

    url: str = Field(pattern=r"^https?://")
    md5: Md5 | None
    archive: str | None
    retries: NonNegativeInt
    timeout_seconds: PositiveFloat


class PrepareParams(Section):
    """How the dev set is split and standardized."""

    val_fraction: float = Field(gt=0, lt=1)
    seed: Seed
    scaling: Literal["per_pixel", "per_channel", "unit"]


class BackpropParams(Section):
    """Shapes, tolerances and descent settings of the numpy backprop check."""

    seed: Seed
    n_samples: PositiveInt
    n_inputs: PositiveInt
    n_hidden: PositiveInt
    finite_difference_step: PositiveFloat
    tolerance_reference: PositiveFloat
    tolerance_finite_difference: PositiveFloat
    tolerance_autodiff: PositiveFloat
    descent_steps: PositiveInt
    descent_learning_rate: PositiveFloat


class TrainParams(Section):
    """The Keras MLP and its Adam optimizer, the training tricks and the speed knobs."""

    seed: Seed
    hidden_units: list[PositiveInt] = Field(min_length=1)
    activation: Literal["relu", "sigmoid", "tanh", "gelu"]
    learning_rate: PositiveFloat
    epochs: PositiveInt
    batch_size: PositiveInt
    lr_schedule: Literal["constant", "cosine"]
    early_stopping_patience: NonNegativeInt
    restore_best_epoch: bool
    horizontal_flip: bool
    dropout: float = Field(ge=0, lt=1)
    weight_decay: NonNegativeFloat
    jit_compile: bool
    steps_per_execution: PositiveInt
    distribute: Literal["none", "mirrored", "multi_worker"]


class EvaluateParams(Section):
    """Test-set evaluation."""

    batch_size: PositiveInt


class PlotsParams(Section):
    """What the figures show."""

    samples_per_class: PositiveInt
    n_predictions: PositiveInt
    n_confident_errors: PositiveInt
    dpi: PositiveInt


class Params(Section):
    """The whole params.yaml: one section per stage."""

    data: DataParams
    prepare: PrepareParams
    backprop: BackpropParams
    train: TrainParams
    evaluate: EvaluateParams
    plots: PlotsParams


class ParamsError(StageError):
    """params.yaml is missing, unreadable or does not fit the schema."""


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "missing":
        return f"{source}: {key} is missing"
    if error["type"] == "extra_forbidden":
        return f"{source}: {key} is not a known key"
    return f"{source}: {key} = {error['input']!r}: {error['msg']}"


def validate_params(raw: object, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params mapping; raise ParamsError naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        lines = [_describe(detail, source) for detail in error.errors()]
        raise ParamsError("\n".join(lines)) from None


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file (run from the repository root)") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None
    return validate_params(raw, str(path))
