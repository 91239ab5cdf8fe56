"""Accuracy with its uncertainty: intervals over seeds or images, and paired comparisons.

Two sources of noise move a validation accuracy: the training's randomness (the seed)
and which images the validation split happens to hold. Over two or more seeds, an
accuracy's 95 % interval is Student's t over the seeds' accuracies; with one seed it is
the exact binomial interval over the images, which leaves the seed's noise out (and
says so). A comparison of two runs is paired: over the same validation images (a paired
bootstrap of the per-image difference) and, with two or more seeds on each side, over
seeds (a paired t-test when both ran the same seeds, Welch's otherwise). It calls a run
better only when every interval it could compute excludes no difference. SciPy does
the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# Resamples of the paired bootstrap; the interval's ends vary a little with the draw,
# far below the accuracies' own noise at this many.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the same runs always give the same interval
MIN_SEEDS_FOR_SPREAD = 2  # a standard deviation needs two
MAX_SEEDS_SUGGESTED = 1000  # beyond this, "more seeds" is no answer


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % interval, and how the interval was computed."""

    mean: float
    low: float
    high: float
    method: str

    def excludes_zero(self) -> int:
        """1 if the whole interval is above 0, -1 if below, 0 if it holds 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def describe(self, digits: int = 4) -> str:
        """``+0.0123 [+0.0040, +0.0206] (method)``."""
        return (
            f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
            f"({self.method})"
        )


def accuracy_interval(accuracies: Sequence[float], images: int) -> Interval:
    """Return the mean accuracy over seeds with its 95 % interval.

    Student's t over two or more seeds (clipped to [0, 1]); with one seed, the exact
    (Clopper-Pearson) binomial interval over its ``images`` validation or test images.
    """
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no accuracies: at least one seed is needed")
    mean = float(values.mean())
    if values.size == 1:
        correct = round(mean * images)
        bounds = stats.binomtest(correct, images).proportion_ci(CONFIDENCE)
        return Interval(mean, bounds.low, bounds.high, f"binomial over {images} images, 1 seed")
    spread = float(values.std(ddof=1))
    if spread == 0:
        return Interval(mean, mean, mean, f"t over {values.size} seeds")
    low, high = stats.t.interval(
        CONFIDENCE, values.size - 1, loc=mean, scale=spread / math.sqrt(values.size)
    )
    # An accuracy lies in [0, 1]; so does the interval of one.
    return Interval(
        mean, max(float(low), 0.0), min(float(high), 1.0), f"t over {values.size} seeds"
    )


def seed_spread(accuracies: Sequence[float]) -> float:
    """Return the seeds' standard deviation (0 for one seed)."""
    return float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0


@dataclass(frozen=True)
class Run:
    """One experiment's validation predictions: per seed, which images it got right."""

    name: str
    correct: Mapping[int, np.ndarray]  # seed -> bool per validation image

    def accuracies(self) -> list[float]:
        """Return each seed's accuracy."""
        return [float(np.mean(values)) for values in self.correct.values()]


@dataclass(frozen=True)
class Comparison:
    """The difference A - B in mean validation accuracy, its intervals and the verdict."""

    difference: float
    over_images: Interval
    over_seeds: Interval | None  # None: fewer than two seeds on a side
    verdict: str
    seeds_to_resolve: int | None  # per side, at the seeds' spread; None: not estimable

    def report(self, first: str, second: str) -> str:
        """Return the lines `cifar10-compare` prints."""
        lines = [
            f"validation accuracy, {first} - {second}: {self.difference:+.4f}",
            f"  over the images: {self.over_images.describe()}",
        ]
        if self.over_seeds is None:
            lines.append(
                "  over seeds: not estimable with one seed on a side "
                "(train.seeds with two or more measures the seeds' spread)"
            )
        else:
            lines.append(f"  over seeds: {self.over_seeds.describe()}")
        lines.append(f"verdict: {self.verdict}")
        if self.seeds_to_resolve is not None:
            lines.append(
                f"{self.seeds_to_resolve} seeds on each side would resolve a difference "
                f"of {abs(self.difference):.4f} at the seeds' spread"
            )
        elif self.over_seeds is not None and not self.over_images.excludes_zero():
            lines.append(
                "the seeds agree, but another draw of validation images could give the "
                "difference either sign: more seeds narrow that interval little"
            )
        return "\n".join(lines)


def paired_image_interval(first: np.ndarray, second: np.ndarray, method: str) -> Interval:
    """Paired bootstrap over images of mean(first) - mean(second), per-image scores."""
    difference = float(first.mean() - second.mean())
    if np.array_equal(first, second):
        return Interval(0.0, 0.0, 0.0, method)
    result = stats.bootstrap(
        (first, second),
        lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        batch=250,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    bounds = result.confidence_interval
    return Interval(difference, float(bounds.low), float(bounds.high), method)


def seed_interval(first: Mapping[int, float], second: Mapping[int, float]) -> Interval:
    """Return the seeds' difference of mean accuracies with its 95 % interval.

    Paired t when both sides ran the same seeds (matched by seed), Welch's t otherwise.
    """
    paired = set(first) == set(second)
    seeds = sorted(first)
    a = [first[seed] for seed in seeds] if paired else list(first.values())
    b = [second[seed] for seed in seeds] if paired else list(second.values())
    mean = float(np.mean(a) - np.mean(b))
    method = (
        f"paired t over {len(a)} seeds" if paired else f"Welch t over {len(a)} and {len(b)} seeds"
    )
    if _difference_spread(first, second) == 0:  # SciPy's tests are undefined without spread
        return Interval(mean, mean, mean, method)
    result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    bounds = result.confidence_interval(CONFIDENCE)
    return Interval(mean, float(bounds.low), float(bounds.high), method)


def _difference_spread(first: Mapping[int, float], second: Mapping[int, float]) -> float:
    """Return the spread seed_interval's test sees.

    Of the per-seed differences when paired, else of both sides together (the square root
    of the sum of their variances).
    """
    if set(first) == set(second):
        return seed_spread([first[seed] - second[seed] for seed in first])
    return math.hypot(seed_spread(list(first.values())), seed_spread(list(second.values())))


def seeds_to_resolve(difference: float, spread: float) -> int | None:
    """Return the fewest seeds per side whose t interval at ``spread`` excludes ``difference``.

    ``spread`` is the standard deviation of one seed's difference (paired) or of one
    side's accuracy; None when it is 0 or no number of seeds up to 1000 would do.
    """
    if spread <= 0 or difference == 0:
        return None
    for seeds in range(2, MAX_SEEDS_SUGGESTED + 1):
        if stats.t.ppf(0.5 + CONFIDENCE / 2, seeds - 1) * spread / math.sqrt(seeds) < abs(
            difference
        ):
            return seeds
    return None


def compare_runs(first: Run, second: Run) -> Comparison:
    """Compare two runs' validation accuracies, paired over images and seeds."""
    lengths = {len(values) for run in (first, second) for values in run.correct.values()}
    if len(lengths) != 1:
        raise ValueError(
            f"the runs scored different numbers of validation images ({sorted(lengths)}): "
            "a paired comparison needs the same validation split (the same prepare params)"
        )
    # Each image's share of seeds that got it right, on either side.
    first_scores = np.mean(list(first.correct.values()), axis=0)
    second_scores = np.mean(list(second.correct.values()), axis=0)
    over_images = paired_image_interval(
        first_scores,
        second_scores,
        f"paired bootstrap over {first_scores.size} images",
    )
    first_accuracies = dict(zip(first.correct, first.accuracies(), strict=True))
    second_accuracies = dict(zip(second.correct, second.accuracies(), strict=True))
    over_seeds = None
    needed = None
    if min(len(first.correct), len(second.correct)) >= MIN_SEEDS_FOR_SPREAD:
        over_seeds = seed_interval(first_accuracies, second_accuracies)
    intervals = [over_images] if over_seeds is None else [over_images, over_seeds]
    signs = {interval.excludes_zero() for interval in intervals}
    if signs == {1}:
        verdict = f"{first.name} is better"
    elif signs == {-1}:
        verdict = f"{second.name} is better"
    else:
        counts = sorted({len(first.correct), len(second.correct)}, reverse=True)
        seeds = " and ".join(map(str, counts))
        verdict = f"not distinguishable at {seeds} seed{'s' if counts != [1] else ''}"
        # More seeds resolve only a seed interval that holds 0.
        if over_seeds is not None and not over_seeds.excludes_zero():
            spread = _difference_spread(first_accuracies, second_accuracies)
            needed = seeds_to_resolve(over_images.mean, spread)
    return Comparison(over_images.mean, over_images, over_seeds, verdict, needed)
