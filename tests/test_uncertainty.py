"""Intervals and paired comparisons against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cifar10.uncertainty import (
    Run,
    accuracy_interval,
    compare_runs,
    seed_interval,
    seeds_to_resolve,
)

IMAGES = 10_000


def simulated_run(name: str, seeds: list[int], accuracy: float, seed: int = 0) -> Run:
    """Seeds whose models get each validation image right with probability ``accuracy``,
    mostly the same images (models of one setting agree on about 80 % of them)."""
    rng = np.random.default_rng(seed)
    shared = rng.random(IMAGES)
    correct = {}
    for run_seed in seeds:
        own = np.random.default_rng([seed, run_seed]).random(IMAGES)
        mixed = np.where(
            np.random.default_rng([seed, run_seed, 1]).random(IMAGES) < 0.8, shared, own
        )
        correct[run_seed] = mixed < accuracy
    return Run(name, correct)


def flipped(run: Run, name: str, share: float = 0.05) -> Run:
    """``run`` with ``share`` of each seed's correct predictions made wrong."""
    rng = np.random.default_rng(1)
    correct = {}
    for seed, values in run.correct.items():
        right = np.flatnonzero(values)
        wrong = rng.choice(right, size=round(share * right.size), replace=False)
        copy = values.copy()
        copy[wrong] = False
        correct[seed] = copy
    return Run(name, correct)


@pytest.mark.parametrize("seeds", [[42], [42, 7], [42, 7, 1], [42, 7, 1, 2, 3]])
def test_two_identical_runs_are_never_better(seeds: list[int]) -> None:
    run = simulated_run("A", seeds, 0.58)
    comparison = compare_runs(run, Run("B", dict(run.correct)))
    assert comparison.difference == 0
    assert comparison.verdict.startswith("not distinguishable")


@pytest.mark.parametrize("seeds", [[42], [42, 7], [42, 7, 1], [42, 7, 1, 2, 3]])
def test_a_copy_with_5_percent_of_its_correct_predictions_flipped_is_worse(
    seeds: list[int],
) -> None:
    run = simulated_run("A", seeds, 0.58)
    worse = flipped(run, "B")
    assert compare_runs(run, worse).verdict == "A is better"
    # The other way round: the better one is still named, now as the second.
    assert compare_runs(worse, run).verdict == "A is better"


def test_runs_of_one_setting_are_not_distinguishable_and_say_how_many_seeds_would_resolve() -> None:
    first = simulated_run("A", [42, 7, 1], 0.58, seed=0)
    second = simulated_run("B", [42, 7, 1], 0.58, seed=1)
    comparison = compare_runs(first, second)
    assert comparison.verdict == "not distinguishable at 3 seeds"
    assert comparison.over_seeds is not None
    assert comparison.over_seeds.low < 0 < comparison.over_seeds.high


def test_seeds_that_agree_on_a_difference_smaller_than_the_images_resolve_say_so() -> None:
    # Each seed of B gets 100 of A's wrong images right and 90 of its right ones wrong,
    # different images for each seed: +0.0010 on every seed, on few images.
    run = simulated_run("A", [42, 7, 1], 0.58)
    rng = np.random.default_rng(2)
    correct = {}
    for seed, values in run.correct.items():
        copy = values.copy()
        copy[rng.choice(np.flatnonzero(~values), size=100, replace=False)] = True
        copy[rng.choice(np.flatnonzero(values), size=90, replace=False)] = False
        correct[seed] = copy
    comparison = compare_runs(Run("B", correct), run)
    assert comparison.over_seeds is not None
    assert comparison.over_seeds.excludes_zero() == 1
    assert comparison.over_images.excludes_zero() == 0
    assert comparison.verdict == "not distinguishable at 3 seeds"
    assert comparison.seeds_to_resolve is None
    report = comparison.report("B", "A")
    assert "another draw of validation images could give the difference either sign" in report
    assert "would resolve" not in report


def test_a_one_seed_accuracy_has_the_exact_binomial_interval() -> None:
    interval = accuracy_interval([0.58], IMAGES)
    expected = stats.binomtest(5800, IMAGES).proportion_ci(0.95)
    assert (interval.low, interval.high) == (expected.low, expected.high)
    assert interval.method == "binomial over 10000 images, 1 seed"
    # The known width: about 1.96 standard errors each side.
    assert interval.high - interval.low == pytest.approx(
        2 * 1.96 * (0.58 * 0.42 / IMAGES) ** 0.5, rel=0.02
    )


def test_seed_intervals_cover_the_true_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    draws, covered = 2000, 0
    for _ in range(draws):
        accuracies = rng.normal(0.58, 0.004, size=3)
        interval = accuracy_interval(list(accuracies), IMAGES)
        covered += interval.low <= 0.58 <= interval.high
    assert covered / draws == pytest.approx(0.95, abs=0.015)


@pytest.mark.parametrize("paired", [True, False])
def test_seed_difference_intervals_cover_the_true_difference_95_percent_of_the_time(
    paired: bool,
) -> None:
    rng = np.random.default_rng(1)
    draws, covered = 2000, 0
    for _ in range(draws):
        first = dict(zip([42, 7, 1], rng.normal(0.585, 0.004, size=3), strict=True))
        second_seeds = [42, 7, 1] if paired else [2, 3, 4, 5]
        second = dict(
            zip(second_seeds, rng.normal(0.580, 0.006, size=len(second_seeds)), strict=True)
        )
        interval = seed_interval(first, second)
        covered += interval.low <= 0.005 <= interval.high
    assert covered / draws == pytest.approx(0.95, abs=0.015)


def test_seeds_to_resolve_is_the_fewest_whose_t_interval_excludes_the_difference() -> None:
    seeds = seeds_to_resolve(0.003, 0.004)
    assert seeds is not None

    def half_width(n: int) -> float:
        return stats.t.ppf(0.975, n - 1) * 0.004 / n**0.5

    assert half_width(seeds) < 0.003 <= half_width(seeds - 1)
    assert seeds_to_resolve(0.0, 0.004) is None
    assert seeds_to_resolve(0.003, 0.0) is None


def test_runs_on_different_validation_splits_are_refused() -> None:
    first = Run("A", {42: np.ones(100, dtype=bool)})
    second = Run("B", {42: np.ones(120, dtype=bool)})
    with pytest.raises(ValueError, match="same validation split"):
        compare_runs(first, second)


def test_the_same_seeds_in_another_order_are_paired_seed_by_seed() -> None:
    first = {42: 0.580, 7: 0.590, 1: 0.585}
    second = {1: 0.583, 42: 0.578, 7: 0.588}  # each 0.002 lower than its seed in first
    interval = seed_interval(first, second)
    assert interval.method == "paired t over 3 seeds"
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.002, 0.002, 0.002))
