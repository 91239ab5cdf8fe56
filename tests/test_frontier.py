"""tools/frontier.py: a sweep's settings, their mean accuracy and their repro seconds."""

from __future__ import annotations

from tools.frontier import frontier


def experiment(rev: str, epochs: int, seeds: list[int], accuracy: float, fit: float) -> dict:
    return {
        "name": rev,
        "data": {
            "rev": rev,
            "timestamp": "2026-11-30T01:39:00",
            "params": {"params.yaml": {"data": {"train": {"epochs": epochs, "seeds": seeds}}}},
            "metrics": {
                "reports/metrics.json": {"data": {"validation": {"accuracy": accuracy}}},
                "reports/cost.json": {"data": {"fit_seconds": fit, "trainings": len(seeds)}},
            },
        },
    }


SHOWN = [
    {"rev": "workspace", "experiments": None},
    {"rev": "a1b2c3", "experiments": [
        {"revs": [experiment("twenty", 20, [42, 7], 0.59, 34.0)]},
        {"revs": [experiment("forty-a", 40, [42], 0.61, 33.0)]},
        {"revs": [experiment("forty-b", 40, [7], 0.59, 35.0)]},
    ]},
]  # fmt: skip


def test_each_setting_has_its_mean_accuracy_and_the_repro_seconds_of_one_fit() -> None:
    rows = frontier(SHOWN, ["train.epochs"], outside_fit=29.0)
    assert rows == [
        {"train.epochs": 20, "seeds": 2, "validation_accuracy": 0.59, "repro_seconds": 46.0},
        {"train.epochs": 40, "seeds": 2, "validation_accuracy": 0.6, "repro_seconds": 63.0},
    ]
