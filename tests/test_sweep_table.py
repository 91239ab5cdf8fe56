"""The sweep summary: each experiment's accuracy and interval, the best and its equals marked."""

from __future__ import annotations

import numpy as np

from cifar10.uncertainty import Run
from tools.sweep_table import sweep_table

IMAGES = 2000


def experiment(rev: str, batch: int, accuracy: float, *, finished: bool = True) -> dict:
    return {
        "revs": [
            {
                "name": f"exp-{rev}",
                "data": {
                    "rev": rev if finished else "workspace",
                    "timestamp": "2026-11-29T10:00:00" if finished else None,
                    "params": {
                        "params.yaml": {"data": {"train": {"seeds": [42, 7], "batch_size": batch}}}
                    },
                    "metrics": {
                        "reports/metrics.json": {
                            "data": {
                                "validation": {
                                    "accuracy": accuracy,
                                    "low": accuracy - 0.01,
                                    "high": accuracy + 0.01,
                                }
                            }
                        },
                        "reports/cost.json": {"data": {"fit_seconds": 40.0}},
                    },
                },
            }
        ]
    }


def correct(accuracy: float, seed: int) -> np.ndarray:
    """Seeds whose models get mostly the same images right, ``accuracy`` of them."""
    shared = np.random.default_rng(0).random(IMAGES)
    own = np.random.default_rng(seed).random(IMAGES)
    return np.where(np.random.default_rng(seed + 1).random(IMAGES) < 0.9, shared, own) < accuracy


RUNS = {
    # The best; a run of the same setting with other seeds; a clearly worse one.
    "aaa": Run("aaa", {42: correct(0.60, 42), 7: correct(0.60, 7)}),
    "bbb": Run("bbb", {42: correct(0.60, 3), 7: correct(0.60, 4)}),
    "ccc": Run("ccc", {42: correct(0.50, 42), 7: correct(0.50, 7)}),
}


def test_the_best_and_every_experiment_not_distinguishable_from_it_are_marked() -> None:
    shown = [
        {
            "experiments": [
                experiment("aaa", 256, 0.601),
                experiment("bbb", 512, 0.598),
                experiment("ccc", 1024, 0.50),
                experiment("ddd", 128, 0.99, finished=False),  # still running
            ]
        }
    ]
    table = sweep_table(shown, ["train.batch_size"], {}, RUNS.__getitem__)
    assert table == [
        "train.batch_size | seeds | validation accuracy [95 % interval] | fit s |  | experiment",
        "256 | 42, 7 | 0.6010 [0.5910, 0.6110] | 40.0 | best | exp-aaa",
        "512 | 42, 7 | 0.5980 [0.5880, 0.6080] | 40.0 | ~ | exp-bbb",
        "1024 | 42, 7 | 0.5000 [0.4900, 0.5100] | 40.0 |  | exp-ccc",
    ]
    only = sweep_table(shown, ["train.batch_size"], {"train.batch_size": "512"}, RUNS.__getitem__)
    assert only[1:] == ["512 | 42, 7 | 0.5980 [0.5880, 0.6080] | 40.0 | best | exp-bbb"]
