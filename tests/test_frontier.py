"""tools/frontier.py: a sweep's settings, their mean accuracy and their repro seconds."""

from __future__ import annotations

from tools.frontier import fit_seconds, frontier


def experiment(name: str, epochs: int, seed: int, accuracy: float) -> dict:
    return {
        "name": name,
        "data": {
            "timestamp": "2026-11-30T01:39:00",
            "params": {"params.yaml": {"data": {"train": {"epochs": epochs, "seed": seed}}}},
            "metrics": {"reports/metrics.json": {"data": {"validation": {"accuracy": accuracy}}}},
        },
    }


SHOWN = [
    {"rev": "workspace", "experiments": None},
    {"rev": "a1b2c3", "experiments": [
        {"revs": [experiment("twenty-a", 20, 42, 0.58)]},
        {"revs": [experiment("twenty-b", 20, 7, 0.60)]},
        {"revs": [experiment("forty-a", 40, 42, 0.61)]},
        {"revs": [experiment("forty-b", 40, 7, 0.59)]},
    ]},
]  # fmt: skip
LOGS = {
    "twenty-a": "Running stage 'train':\ntrained 402,250 parameters on 1 device(s): "
    "20 epochs in 17.0 s (47058 samples/s); validation accuracy 0.5800 at epoch 18\n",
    # Restored from DVC's run-cache: it trained no time of its own.
    "twenty-b": "Stage 'train' is cached - skipping run, checking out outputs\n",
    "forty-a": "40 epochs in 33.0 s (48484 samples/s)",
    "forty-b": "40 epochs in 35.0 s (45714 samples/s)",
}


def test_each_setting_has_its_mean_accuracy_and_the_repro_seconds_of_its_fits() -> None:
    rows = frontier(SHOWN, ["train.epochs"], LOGS.__getitem__, outside_fit=29.0)
    assert rows == [
        {"train.epochs": 20, "runs": 2, "validation_accuracy": 0.59, "spread": 0.02,
         "repro_seconds": 46.0},
        {"train.epochs": 40, "runs": 2, "validation_accuracy": 0.6, "spread": 0.02,
         "repro_seconds": 63.0},
    ]  # fmt: skip


def test_fit_seconds_come_from_the_train_stages_last_line() -> None:
    assert fit_seconds(LOGS["twenty-a"]) == 17.0
    assert fit_seconds(LOGS["twenty-b"]) is None
