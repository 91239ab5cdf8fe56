"""The typed schema of ``params.yaml``, validated at the start of every stage.

Every section is a frozen pydantic model that forbids unknown keys, so a typo or a bad
value stops a stage before it does any work, with one line per problem that names the
key, the value and what is allowed. Every number has the range a real run needs: a
value that could only exhaust memory or time is refused up front. Each key is described
once, here; params.yaml carries the same words as its comments (a test checks them).

The file is read as DVC reads it (YAML 1.2, ruamel.yaml's safe loader, duplicate keys
refused), so a stage trains with the values that ``dvc.lock`` and ``dvc exp show`` record.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError

from cifar10.archive import CLASS_NAMES, FEATURES
from cifar10.errors import ParamsError

PARAMS_FILE = Path("params.yaml")

# Bounds for this machine (24 GiB of memory, 2 CPU cores) that no in-range value can
# pass, whatever the others are. Training holds about 16 bytes per parameter (float32
# weights, gradients and Adam's two moments): 800 MB at 50 million.
MAX_MLP_PARAMETERS = 50_000_000
# Float32 values of one batch's layer inputs and outputs (2^28: 1 GiB); training keeps a
# few copies of them (values, gradients), so a few GiB.
MAX_BATCH_ACTIVATIONS = 1 << 28
# Multiply-adds of the backprop check, so that no in-range sizes keep it running for
# hours on 2 cores; a forward pass counts n_samples x n_hidden x (n_inputs + 16), the
# sigmoids costing about 16 multiply-adds each.
MAX_BACKPROP_OPERATIONS = 2 * 10**10
_SIGMOID_OPERATIONS = 16

# numpy's and scikit-learn's seeds are unsigned 32-bit integers.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
# prepare.scaling's modes, each fitted by cifar10/preprocessing.py.
Scaling = Literal["unit", "per_channel", "per_pixel", "zca"]


class Section(BaseModel):
    """Common configuration: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_absolute(path: str) -> None:
    """Refuse an empty or relative archive path, saying what to write instead."""
    if not path.strip():
        # `-S data.archive=$(realpath missing/file)` hands DVC an empty value, say.
        raise ValueError(
            "an empty path; give the archive's absolute path, or null to download "
            "(-S data.archive=null)"
        )
    if not Path(path).is_absolute():
        # Queued and temporary experiments run in a copy of the repository under
        # .dvc/tmp/exps/, where a relative path names another file (or none).
        raise ValueError(
            "a relative path, which names another file in the copy of the repository "
            "that a queued experiment runs in; write it absolute, for example "
            f"-S data.archive=$(realpath {path})"
        )


class DataParams(Section):
    """Where the CIFAR-10 archive comes from and how it is checked."""

    url: str = Field(pattern=r"^https?://", description="The official archive to download.")
    md5: str | None = Field(
        pattern=r"^[0-9a-fA-F]{32}$",
        description="The archive's md5 (DVC 3 hashes files by md5 too); null: its own checks only.",
    )
    archive: str | None = Field(
        description=(
            "A local archive to verify and use instead of the URL, as an absolute path "
            "(queued experiments run elsewhere); empty (null): download."
        )
    )
    retries: int = Field(
        ge=0, le=20, description="Download attempts after the first, waiting longer each time."
    )
    timeout_seconds: float = Field(
        gt=0, le=600, description="Network timeout for connecting and for each read."
    )

    @field_validator("md5")
    @classmethod
    def _lowercase(cls, value: str | None) -> str | None:
        # md5sum prints lowercase; an uppercase copy of the same hash is the same hash.
        return None if value is None else value.lower()

    @field_validator("archive")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None:
            check_absolute(value)
        return value


class PrepareParams(Section):
    """How the dev set is split and how images become the model's inputs."""

    val_fraction: float = Field(
        gt=0, le=0.5, description="Share of the dev set held out for validation, stratified."
    )
    seed: Seed = Field(description="Seed of the stratified split.")
    scaling: Scaling = Field(
        description=(
            "How images become the model's inputs, fitted on the train split: unit (the "
            "assignment's x / 255), per_channel or per_pixel (a z-score per RGB channel or "
            "per pixel), zca (ZCA whitening: decorrelated pixels, edges emphasized)."
        )
    )
    zca_epsilon: float = Field(
        gt=0, le=100, description="ZCA regularization, on pixels in [0, 1]; larger is milder."
    )
    zca_fit_images: int | None = Field(
        ge=1000,
        le=60_000,
        description=(
            "Train images the ZCA covariance is fitted on, the first of the shuffled train "
            "split (its cost grows with them); null: all of them."
        ),
    )
    zca_component_share: float = Field(
        gt=0,
        le=1,
        description=(
            "Components of variance below this share of zca_epsilon are scaled by "
            "zca_epsilon^-1/2 alone, at most sqrt(1 + share) - 1 (9.5 % at 0.2) above the "
            "exact ZCA, for fewer components to compute."
        ),
    )


_BACKPROP_WORK = (
    f"with the other sizes, at most {MAX_BACKPROP_OPERATIONS:.0e} multiply-adds in all."
)


class BackpropParams(Section):
    """Part 1's numpy backprop check (its printed values hold for the assignment's sizes)."""

    seed: Seed = Field(description="Seed of the weights and the data.")
    n_samples: int = Field(ge=1, le=100_000, description=f"Rows of X; {_BACKPROP_WORK}")
    n_inputs: int = Field(ge=1, le=100, description=f"Columns of X; {_BACKPROP_WORK}")
    n_hidden: int = Field(ge=1, le=100, description=f"Hidden units; {_BACKPROP_WORK}")
    finite_difference_step: float = Field(
        gt=0, le=1e-2, description="h of the central differences (L(w+h) - L(w-h)) / 2h."
    )
    tolerance_reference: float = Field(
        gt=0, le=1, description="Largest error against the assignment's printed values."
    )
    tolerance_finite_difference: float = Field(
        gt=0, le=1, description="Largest error against the central finite differences."
    )
    tolerance_autodiff: float = Field(
        gt=0, le=1, description="Largest error against JAX's autodiff in float64."
    )
    descent_steps: int = Field(
        ge=1,
        le=100_000,
        description=(
            f"Steps of plain gradient descent with the numpy gradients (3 forward passes "
            f"each): the loss must fall; {_BACKPROP_WORK}"
        ),
    )
    descent_learning_rate: float = Field(
        gt=0, le=100, description="The gradient descent's learning rate."
    )

    @property
    def operations(self) -> int:
        """Multiply-adds of the check: 2 forward passes a parameter, 3 a descent step."""
        parameters = self.n_hidden * (self.n_inputs + 2) + 1  # W1, b1, W2, b2
        forward = self.n_samples * self.n_hidden * (self.n_inputs + _SIGMOID_OPERATIONS)
        return forward * (2 * parameters + 3 * self.descent_steps)

    @model_validator(mode="after")
    def _within_the_machine(self) -> Self:
        if self.operations > MAX_BACKPROP_OPERATIONS:
            raise ValueError(
                f"n_samples = {self.n_samples}, n_inputs = {self.n_inputs}, n_hidden = "
                f"{self.n_hidden} and descent_steps = {self.descent_steps} need about "
                f"{self.operations:.1e} multiply-adds, more than the "
                f"{MAX_BACKPROP_OPERATIONS:.0e} allowed so that the check cannot run for "
                "hours on 2 cores; make some of them smaller"
            )
        return self


# The Keras backends the pipeline runs on (and KERAS_BACKEND may name).
Backend = Literal["jax", "tensorflow"]
BACKENDS: tuple[str, ...] = get_args(Backend)


class TrainParams(Section):
    """The Keras MLP, its optimizer, the tricks of docs/tuning.md, and how training is spread."""

    hidden_units: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        min_length=1,
        max_length=8,
        description=(
            "Units of each hidden layer, between the 3072 inputs and the 10 outputs; at "
            f"most {MAX_MLP_PARAMETERS:,} parameters in all."
        ),
    )
    activation: Literal["relu", "sigmoid", "tanh", "gelu"] = Field(
        description="Keras' activation of the hidden layers."
    )
    learning_rate: float = Field(
        gt=0, le=1, description="Peak learning rate of Adam (AdamW with weight decay)."
    )
    seeds: list[Seed] = Field(
        min_length=1,
        max_length=100,
        description=(
            "Seeds of the weights, the shuffling and the augmentation: one training per "
            "seed, and the accuracies' mean and 95 % interval over them; the first seed's "
            "model is the one predict and the registry use."
        ),
    )
    epochs: int = Field(ge=1, le=1000, description="Passes over the train split.")
    batch_size: int = Field(
        ge=1,
        le=65536,
        description=(
            "Images per step, over all devices; one that divides both splits leaves no "
            "smaller last batch to compile a second step for. batch_size x (3072 + hidden "
            f"units + 10) is at most {MAX_BATCH_ACTIVATIONS:,} values."
        ),
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        description="constant, or cosine: decays to 0 by the last step."
    )
    warmup_epochs: float = Field(
        ge=0, le=1000, description="Linear warm-up from 0 to learning_rate, in epochs; 0: none."
    )
    early_stopping_patience: int = Field(
        ge=0,
        le=1000,
        description="Stop after N epochs without a better validation accuracy; 0: never.",
    )
    restore_best_epoch: bool = Field(
        description="Keep the weights of the best validation epoch, not the last."
    )
    horizontal_flip: bool = Field(description="Mirror a random half of the images of every batch.")
    max_shift: int = Field(
        ge=0, le=8, description="Shift every image by up to N pixels each way; 0: off."
    )
    test_time_flip: bool = Field(
        description=(
            "Predict the mean of the model's outputs for each image and its mirror image "
            "(the best epoch's choice, validation, test and predict alike)."
        )
    )
    label_smoothing: float = Field(
        ge=0, lt=1, description="Share of each target spread over all classes; 0: off."
    )
    dropout: float = Field(ge=0, lt=1, description="Dropout after each hidden layer; 0: off.")
    weight_decay: float = Field(ge=0, le=1, description="Above 0, Adam becomes AdamW.")
    distribute: Literal["none", "data_parallel"] = Field(
        description=(
            "none: this machine's default device; data_parallel: Keras' DataParallel over "
            "every local device, and over processes when KERAS_DISTRIBUTION_* is set "
            "(docs/scaling.md)."
        )
    )
    backend: Backend = Field(
        description=(
            "Keras' backend; dvc.yaml's train command sets KERAS_BACKEND from it, as Keras "
            "reads it when it loads. data_parallel needs jax."
        )
    )

    @property
    def parameter_count(self) -> int:
        """The MLP's parameters: each dense layer's kernel and bias, 3072 inputs, 10 outputs."""
        widths = [FEATURES, *self.hidden_units, len(CLASS_NAMES)]
        return sum(inputs * units + units for inputs, units in itertools.pairwise(widths))

    @model_validator(mode="after")
    def _within_the_machine(self) -> Self:
        if self.parameter_count > MAX_MLP_PARAMETERS:
            raise ValueError(
                f"hidden_units = {self.hidden_units} makes an MLP of {self.parameter_count:,} "
                f"parameters, more than the {MAX_MLP_PARAMETERS:,} this machine trains "
                "(about 16 bytes each in training)"
            )
        activations = self.batch_size * (FEATURES + sum(self.hidden_units) + len(CLASS_NAMES))
        if activations > MAX_BATCH_ACTIVATIONS:
            raise ValueError(
                f"batch_size = {self.batch_size} with hidden_units = {self.hidden_units} "
                f"makes {activations:,} layer values per batch, more than the "
                f"{MAX_BATCH_ACTIVATIONS:,} this machine holds in training; make either smaller"
            )
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        # Each seed is a DVC stage (train@<seed>): a repeat would be the same stage twice.
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seeds {repeated} appear more than once; list each seed once")
        return seeds

    @model_validator(mode="after")
    def _warmup_within_training(self) -> Self:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs:g}) must be less than epochs ({self.epochs})"
            )
        return self

    @model_validator(mode="after")
    def _data_parallel_on_jax(self) -> Self:
        # Keras' distribution API (DataParallel) runs on its JAX backend only.
        if self.distribute == "data_parallel" and self.backend != "jax":
            raise ValueError(
                f"distribute = 'data_parallel' needs backend = 'jax', not {self.backend!r}"
            )
        return self


class EvaluateParams(Section):
    """Scoring the kept model on the validation and test splits."""

    batch_size: int = Field(
        ge=1, le=65536, description="Images per forward pass (memory, not results)."
    )


class PlotsParams(Section):
    """What the figures show."""

    samples_per_class: int = Field(
        ge=1, le=20, description="Figure 2.1: training images shown per class."
    )
    n_predictions: int = Field(
        ge=1, le=200, description="Figure 2.9: the first N test images, with truth and prediction."
    )
    n_confident_errors: int = Field(
        ge=1, le=200, description="The N most confidently wrong test predictions."
    )
    dpi: int = Field(ge=30, le=400, description="Resolution of the PNGs.")


class Params(Section):
    """The whole params.yaml: one section per stage."""

    data: DataParams
    prepare: PrepareParams
    backprop: BackpropParams
    train: TrainParams
    evaluate: EvaluateParams
    plots: PlotsParams


def parse_params(text: str, source: str = str(PARAMS_FILE)) -> object:
    """Parse params text exactly as DVC does: YAML 1.2 with ruamel.yaml's safe loader.

    So ``seed: 010`` is 10, ``epochs: 1:05`` a string and ``1e-3`` a float, in the stages
    as in ``dvc.lock``; a key given twice is an error rather than the last one winning.
    """
    try:
        return YAML(typ="safe").load(text)
    except DuplicateKeyError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = (error.problem or "a duplicate key").removeprefix("found ")
        raise ParamsError(f"{source}: {where}{problem}; give each key once") from None
    except YAMLError as error:
        raise ParamsError(f"{source}: not valid YAML: {error}".replace("\n", " ")) from None
    except RecursionError:
        # ruamel.yaml composes nested collections recursively: a thousand levels of [[[...
        raise ParamsError(f"{source}: nested too deeply to be params") from None


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "missing":
        return f"{source}: {key} is missing"
    if error["type"] == "extra_forbidden":
        return f"{source}: {key} is not a known key"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):  # a check across the keys of a section
        return f"{source}: {key}: {message}"
    return f"{source}: {key} = {error['input']!r}: {message}"


def validate_params(raw: object, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params mapping; raise ParamsError naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        lines = [_describe(detail, source) for detail in error.errors()]
        raise ParamsError("\n".join(lines)) from None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ParamsFile:
    """The validated params, and the bytes they were read from (by their digest)."""

    path: Path
    digest: str
    params: Params

    def check_unchanged(self) -> None:
        """Refuse to go on if the file changed since it was read.

        DVC records params.yaml's values when a stage ends, so outputs computed from
        earlier values (a concurrent ``dvc exp run -S`` rewrites the file before it
        finds the repository locked) must not be written.
        """
        try:
            current = _digest(self.path.read_bytes())
        except FileNotFoundError:
            current = ""
        if current != self.digest:
            raise ParamsError(
                f"{self.path} changed while the stage ran, so its results would not match "
                "the params DVC records; nothing was written; run it again"
            )


def read_params(path: Path = PARAMS_FILE) -> ParamsFile:
    """Read and validate the whole params file, keeping its digest."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file (run from the repository root)") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text ({error})") from None
    params = validate_params(parse_params(text, str(path)), str(path))
    return ParamsFile(path, _digest(data), params)
