"""The assignment's Part 1 network in numpy, its gradients checked three ways.

A 2-layer network with sigmoid on both layers and the MSE loss L = 1/(2N) * sum((Y - Y_T)^2).
The numpy backward pass is compared with the assignment's printed values (only for the
assignment's own configuration), with central finite differences and with JAX's
autodiff; a few hundred steps of gradient descent show the gradients are useful. Every
comparison must stay within its tolerance in params.yaml, or the stage writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from cifar10.params import BackpropParams

NAMES = ("W1", "b1", "W2", "b2")
# Each is checked against the params key tolerance_<name>.
COMPARISONS = ("reference", "finite_difference", "autodiff")

# The assignment's configuration: the printed reference values hold for it only.
ASSIGNMENT_CONFIGURATION = {"seed": 0, "n_samples": 1000, "n_inputs": 2, "n_hidden": 3}


def _read_only_float64(value: object) -> np.ndarray:
    array = np.array(value, dtype=np.float64)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Parameters:
    """The network's weights, or the loss's gradients with respect to them (same shapes).

    Arrays are stored as read-only float64 copies; shapes are checked against each other,
    so a transposed W1 (when n_hidden != n_inputs) cannot be built.
    """

    W1: np.ndarray  # (n_hidden, n_inputs)
    b1: np.ndarray  # (n_hidden,)
    W2: np.ndarray  # (n_hidden,)
    b2: float

    def __post_init__(self) -> None:
        W1 = _read_only_float64(self.W1)
        b1 = _read_only_float64(self.b1)
        W2 = _read_only_float64(self.W2)
        b2 = np.asarray(self.b2, dtype=np.float64)
        if W1.ndim != 2:  # noqa: PLR2004 (a matrix)
            raise ValueError(f"W1 must be a matrix (n_hidden, n_inputs), got shape {W1.shape}")
        n_hidden = W1.shape[0]
        for name, vector in (("b1", b1), ("W2", W2)):
            if vector.shape != (n_hidden,):
                raise ValueError(
                    f"{name} must have shape ({n_hidden},) to match W1 {W1.shape}, "
                    f"got {vector.shape}"
                )
        if b2.shape != ():
            raise ValueError(f"b2 must be a scalar, got shape {b2.shape}")
        object.__setattr__(self, "W1", W1)
        object.__setattr__(self, "b1", b1)
        object.__setattr__(self, "W2", W2)
        object.__setattr__(self, "b2", float(b2))

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Name -> float64 array, b2 as a 0-d array, in the order of ``NAMES``."""
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": np.asarray(self.b2)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Parameters:
        """Build from a name -> array mapping with exactly the keys of ``NAMES``."""
        if set(arrays) != set(NAMES):
            raise ValueError(f"expected the keys {NAMES}, got {tuple(arrays)}")
        return cls(W1=arrays["W1"], b1=arrays["b1"], W2=arrays["W2"], b2=float(arrays["b2"]))


# Part 1's printed output. The notebook prints W1's gradient transposed (2 x 3); ours has
# W1's shape (3 x 2), so the reference is its transpose. L and b2 are printed in full,
# the arrays to 8 decimals.
REFERENCE_LOSS = 0.1332476222330792
REFERENCE_GRADIENTS = Parameters(
    W1=np.array([[0.00244596, -0.00030765, -0.00034768], [0.00262019, -0.00024188, -0.000372]]).T,
    b1=np.array([0.00492577, -0.00058023, -0.00065977]),
    W2=np.array([0.02216011, 0.02433097, 0.01797174]),
    b2=0.029249230265318685,
)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Apply the logistic function 1 / (1 + exp(-z)) elementwise."""
    # exp(-z) overflows to inf for z < -709; 1 / inf = 0 is then the correct limit.
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def initialize(
    n_samples: int, n_inputs: int, n_hidden: int, seed: int
) -> tuple[Parameters, np.ndarray, np.ndarray]:
    """Draw the weights, inputs X and 0/1 labels Y exactly as the assignment does.

    The assignment calls ``np.random.seed(seed)`` then draws W1, W2, X, Y in this order;
    a ``RandomState(seed)`` yields the very same numbers without touching numpy's
    global state.
    """
    random = np.random.RandomState(seed)
    W1 = random.randn(n_hidden, n_inputs)
    W2 = random.randn(n_hidden)
    X = random.rand(n_samples, n_inputs)
    Y = random.randint(low=0, high=2, size=(n_samples,)).astype(np.float64)
    weights = Parameters(W1=W1, b1=np.zeros(n_hidden), W2=W2, b2=0.0)
    return weights, X, Y


def _check_data(X: np.ndarray, Y_true: np.ndarray, weights: Parameters) -> None:
    n_inputs = weights.W1.shape[1]
    if X.ndim != 2 or X.shape[1] != n_inputs:  # noqa: PLR2004 (a matrix)
        raise ValueError(f"X must have shape (n_samples, {n_inputs}), got {X.shape}")
    if Y_true.shape != (X.shape[0],):
        raise ValueError(f"Y_true must have shape ({X.shape[0]},), got {Y_true.shape}")


def forward(
    X: np.ndarray, weights: Parameters
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward pass: the output Y, its pre-activation Z2, the hidden H and its Z1."""
    # (N, n_inputs) @ (n_inputs, n_hidden) -> (N, n_hidden)
    Z1 = X @ weights.W1.T + weights.b1
    H = sigmoid(Z1)
    # (N, n_hidden) @ (n_hidden,) -> (N,)
    Z2 = H @ weights.W2 + weights.b2
    Y = sigmoid(Z2)
    return Y, Z2, H, Z1


def loss(Y: np.ndarray, Y_true: np.ndarray) -> float:
    """Compute the assignment's MSE loss 1/(2N) * sum((Y - Y_true)^2)."""
    if Y.shape != Y_true.shape or Y.ndim != 1:
        raise ValueError(f"Y {Y.shape} and Y_true {Y_true.shape} must be equal-length vectors")
    return float((1 / (2 * len(Y))) * np.sum(np.square(Y - Y_true)))


def backward(X: np.ndarray, Y_true: np.ndarray, weights: Parameters) -> tuple[Parameters, float]:
    """Backward pass: the loss's gradients (shaped like the weights) and the loss."""
    _check_data(X, Y_true, weights)
    Y, _, H, _ = forward(X, weights)
    N = len(X)
    # (N,): dL/dY, then through the output sigmoid, sigmoid'(Z2) = Y (1 - Y)
    dY = (Y - Y_true) / N
    dZ2 = dY * Y * (1 - Y)
    # (n_hidden,) output weights gradient, scalar output bias gradient
    dW2 = H.T @ dZ2
    db2 = np.sum(dZ2)
    # (N, n_hidden): back through W2, then the hidden sigmoid, sigmoid'(Z1) = H (1 - H)
    dH = np.outer(dZ2, weights.W2)
    dZ1 = dH * H * (1 - H)
    # (n_hidden, N) @ (N, n_inputs) -> (n_hidden, n_inputs), and (n_hidden,)
    dW1 = dZ1.T @ X
    db1 = np.sum(dZ1, axis=0)
    gradients = Parameters(W1=dW1, b1=db1, W2=dW2, b2=float(db2))
    return gradients, loss(Y, Y_true)


def finite_difference_gradients(
    X: np.ndarray, Y_true: np.ndarray, weights: Parameters, step: float
) -> Parameters:
    """Central differences (L(w + h) - L(w - h)) / 2h of the loss, for every parameter.

    The denominator is the difference of the two shifted float64 values actually used,
    not 2h, which removes the error of rounding w +- h.
    """
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    _check_data(X, Y_true, weights)
    arrays = weights.as_arrays()
    gradients = {}
    for name, value in arrays.items():
        gradient = np.empty_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += step
            minus[index] -= step
            loss_plus = loss(forward(X, Parameters.from_arrays({**arrays, name: plus}))[0], Y_true)
            loss_minus = loss(
                forward(X, Parameters.from_arrays({**arrays, name: minus}))[0], Y_true
            )
            gradient[index] = (loss_plus - loss_minus) / (plus[index] - minus[index])
        gradients[name] = gradient
    return Parameters.from_arrays(gradients)


def autodiff_gradients(
    X: np.ndarray, Y_true: np.ndarray, weights: Parameters
) -> tuple[Parameters, float]:
    """JAX's gradients and loss (``jax.value_and_grad``), in float64, of the same inputs."""
    _check_data(X, Y_true, weights)

    def mse(arrays: dict[str, jax.Array]) -> jax.Array:
        H = jax.nn.sigmoid(X @ arrays["W1"].T + arrays["b1"])
        Y = jax.nn.sigmoid(H @ arrays["W2"] + arrays["b2"])
        return jnp.sum(jnp.square(Y - Y_true)) / (2 * len(X))

    with jax.enable_x64(True):
        L, gradients = jax.value_and_grad(mse)(
            {name: jnp.asarray(value, jnp.float64) for name, value in weights.as_arrays().items()}
        )
        return (
            Parameters.from_arrays({name: np.asarray(value) for name, value in gradients.items()}),
            float(L),
        )


@dataclass(frozen=True)
class Comparison:
    """How far computed values are from trusted ones, over every element of every quantity."""

    max_abs_error: float
    # Elementwise |a - b| / max(|a|, |b|) (0 where both are 0): informative only, since
    # near-zero gradients make it large; tolerances apply to the absolute error.
    max_rel_error: float
    worst: str  # the quantity with the largest absolute error

    def within(self, tolerance: float) -> bool:
        """Whether the largest absolute error is at most ``tolerance`` (NaN never is)."""
        return bool(self.max_abs_error <= tolerance)


def compare(actual: Mapping[str, object], expected: Mapping[str, object]) -> Comparison:
    """Largest absolute and relative errors of ``actual`` against ``expected``, by name."""
    if set(actual) != set(expected) or not expected:
        raise ValueError(f"cannot compare {tuple(actual)} with {tuple(expected)}")
    abs_errors, rel_errors = {}, {}
    for name, expected_value in expected.items():
        a = np.asarray(actual[name], dtype=np.float64)
        b = np.asarray(expected_value, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape {a.shape} does not match the expected {b.shape}")
        abs_error = np.abs(a - b)
        scale = np.maximum(np.abs(a), np.abs(b))
        rel_error = np.divide(abs_error, scale, out=np.zeros_like(abs_error), where=scale > 0)
        abs_errors[name] = float(np.max(abs_error, initial=0.0))
        rel_errors[name] = float(np.max(rel_error, initial=0.0))
    # NaN propagates: it counts as the largest error.
    worst = max(abs_errors, key=lambda name: (np.isnan(abs_errors[name]), abs_errors[name]))
    return Comparison(abs_errors[worst], float(np.max(list(rel_errors.values()))), worst)


def gradient_descent(
    X: np.ndarray, Y_true: np.ndarray, weights: Parameters, steps: int, learning_rate: float
) -> np.ndarray:
    """Plain gradient descent with ``backward``; the loss before each step and after the last."""
    losses = np.empty(steps + 1)
    for step in range(steps):
        gradients, losses[step] = backward(X, Y_true, weights)
        weights = Parameters.from_arrays(
            {
                name: value - learning_rate * gradient
                for (name, value), gradient in zip(
                    weights.as_arrays().items(), gradients.as_arrays().values(), strict=True
                )
            }
        )
    losses[steps] = loss(forward(X, weights)[0], Y_true)
    return losses


def is_assignment_configuration(params: BackpropParams) -> bool:
    """Whether params draw the assignment's exact network and data (seed, sizes)."""
    return all(getattr(params, key) == value for key, value in ASSIGNMENT_CONFIGURATION.items())


@dataclass(frozen=True)
class Verification:
    """Everything the stage computes: the loss, the three comparisons, the descent."""

    loss: float
    # Keys of COMPARISONS; "reference" is None when params are not the assignment's.
    comparisons: dict[str, Comparison | None]
    descent_losses: np.ndarray  # (descent_steps + 1,)


def verify(params: BackpropParams) -> Verification:
    """Run the backward pass and check it against the reference, finite differences, TF."""
    weights, X, Y = initialize(params.n_samples, params.n_inputs, params.n_hidden, params.seed)
    gradients, L = backward(X, Y, weights)
    with_loss = {"L": L, **gradients.as_arrays()}

    reference = None
    if is_assignment_configuration(params):
        reference = compare(with_loss, {"L": REFERENCE_LOSS, **REFERENCE_GRADIENTS.as_arrays()})
    numerical = finite_difference_gradients(X, Y, weights, params.finite_difference_step)
    autodiff, autodiff_loss = autodiff_gradients(X, Y, weights)
    return Verification(
        loss=L,
        comparisons={
            "reference": reference,
            "finite_difference": compare(gradients.as_arrays(), numerical.as_arrays()),
            "autodiff": compare(with_loss, {"L": autodiff_loss, **autodiff.as_arrays()}),
        },
        descent_losses=gradient_descent(
            X, Y, weights, params.descent_steps, params.descent_learning_rate
        ),
    )


def tolerances(params: BackpropParams) -> dict[str, float]:
    """Map each comparison to the largest absolute error it allows."""
    return {name: getattr(params, f"tolerance_{name}") for name in COMPARISONS}


def failures(verification: Verification, params: BackpropParams) -> list[str]:
    """One message per failed check: a comparison over its tolerance, or a rising loss."""
    messages = []
    for name, tolerance in tolerances(params).items():
        comparison = verification.comparisons[name]
        if comparison is not None and not comparison.within(tolerance):
            messages.append(
                f"{name} check failed: max abs error {comparison.max_abs_error:.3g} "
                f"(in {comparison.worst}) exceeds the tolerance {tolerance:.3g}"
            )
    initial, final = verification.descent_losses[[0, -1]]
    if not final < initial:
        messages.append(
            f"gradient descent did not lower the loss: {initial:.6g} -> {final:.6g} over "
            f"{params.descent_steps} steps at learning rate {params.descent_learning_rate}"
        )
    return messages


def report(verification: Verification, params: BackpropParams) -> dict[str, object]:
    """Build the report: the loss, each comparison's errors and tolerance, the descent."""
    report: dict[str, object] = {"loss": verification.loss}
    for name, tolerance in tolerances(params).items():
        comparison = verification.comparisons[name]
        if comparison is None:
            report[name] = {
                "applicable": False,
                "note": "the printed values hold for the assignment's "
                + ", ".join(f"{key} {value}" for key, value in ASSIGNMENT_CONFIGURATION.items())
                + " only",
                "tolerance": tolerance,
            }
            continue
        entry: dict[str, object] = {"applicable": True} if name == "reference" else {}
        report[name] = entry | {
            "max_abs_error": comparison.max_abs_error,
            "max_rel_error": comparison.max_rel_error,
            "tolerance": tolerance,
            "passed": comparison.within(tolerance),
        }
    initial, final = (float(value) for value in verification.descent_losses[[0, -1]])
    report["descent"] = {"initial_loss": initial, "final_loss": final, "decreased": final < initial}
    return report


def loss_table(losses: np.ndarray) -> str:
    """Format the descent's losses as a DVC plot file: ``step<TAB>loss``, a row per step."""
    rows = (f"{step}\t{float(value)!r}" for step, value in enumerate(losses))
    return "step\tloss\n" + "\n".join(rows) + "\n"


def summary(verification: Verification, params: BackpropParams) -> str:
    """Describe the results in a few human-readable lines."""
    lines = [f"backprop: L = {verification.loss!r}"]
    for name, tolerance in tolerances(params).items():
        comparison = verification.comparisons[name]
        if comparison is None:
            lines.append(f"  {name:<18} not applicable (params are not the assignment's)")
        else:
            lines.append(
                f"  {name:<18} max abs error {comparison.max_abs_error:.3g} "
                f"(tolerance {tolerance:.3g}), max rel error {comparison.max_rel_error:.3g}"
            )
    initial, final = verification.descent_losses[[0, -1]]
    lines.append(
        f"  descent: loss {initial:.6g} -> {final:.6g} over {params.descent_steps} steps "
        f"at learning rate {params.descent_learning_rate}"
    )
    return "\n".join(lines)
