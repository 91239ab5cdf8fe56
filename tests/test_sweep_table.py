"""The sweep summary: runs grouped by setting, mean and spread over their seeds."""

from __future__ import annotations

from tools.sweep_table import sweep_table


def revision(seed: int, batch: int, accuracy: float, *, finished: bool = True) -> dict:
    return {
        "revs": [
            {
                "data": {
                    "rev": "abc123" if finished else "workspace",
                    "timestamp": "2026-11-29T10:00:00" if finished else None,
                    "params": {
                        "params.yaml": {"data": {"train": {"seed": seed, "batch_size": batch}}}
                    },
                    "metrics": {
                        "reports/metrics.json": {"data": {"validation": {"accuracy": accuracy}}}
                    },
                }
            }
        ]
    }


def test_runs_are_grouped_by_setting_with_mean_and_spread() -> None:
    shown = [
        {
            "experiments": [
                revision(42, 256, 0.58),
                revision(7, 256, 0.59),
                revision(1, 512, 0.57),
                revision(7, 512, 0.99, finished=False),  # still running: baseline's metrics
            ]
        }
    ]
    assert sweep_table(shown, ["train.batch_size"], {}) == [
        "train.batch_size | runs | validation accuracy: mean | spread | seeds",
        "256 | 2 | 0.5850 | 0.0100 | 7, 42",
        "512 | 1 | 0.5700 | 0.0000 | 1",
    ]
    assert sweep_table(shown, ["train.seed"], {"train.batch_size": "512"})[1:] == [
        "1 | 1 | 0.5700 | 0.0000 | 1"
    ]
