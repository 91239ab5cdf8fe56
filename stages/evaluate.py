"""evaluate stage: one seed's kept model on the validation and test splits.

Keras loads the model folder the train stage wrote (cifar10/model.py) and scores it on
the prepared inputs it was trained on (the notebook's 2.9 fed raw pixels). It writes the
seed's metrics and every image's prediction, which the aggregate stage gathers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cifar10.atomic import atomic_outputs
from cifar10.evaluation import accuracy, per_class_accuracy, test_metrics
from cifar10.model import load_classifier, predict
from cifar10.params import read_params
from cifar10.prepared import read_model_inputs
from cifar10.reports import (
    EvaluationReports,
    TrainReports,
    read_best_epoch,
    write_metrics,
    write_predictions,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate one seed's trained model and write its metrics and tables."""
    parser = argparse.ArgumentParser(prog="python -m stages evaluate", description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train-reports", type=Path, required=True, help="train's report folder")
    parser.add_argument("--output", type=Path, required=True, help="report folder to write")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.evaluate

    epoch = read_best_epoch(TrainReports(arguments.train_reports).summary)
    classifier = load_classifier(arguments.model)
    scores = {}
    for split in ("validation", "test"):
        inputs = read_model_inputs(arguments.prepared, split, classifier.preprocessing)
        scores[split] = inputs.labels, predict(classifier.model, inputs.images, params.batch_size)
    validation_accuracy = accuracy(*scores["validation"])
    test = test_metrics(*scores["test"])
    with atomic_outputs(arguments.output, before_commit=params_file.check_unchanged) as (folder,):
        folder.mkdir()
        reports = EvaluationReports(folder)
        write_metrics(
            reports.metrics,
            {
                "accuracy": validation_accuracy,
                "epoch": epoch,
                "images": len(scores["validation"][0]),
            },
            test | {"images": len(scores["test"][0])},
        )
        write_predictions(reports.validation_predictions, *scores["validation"])
        write_predictions(reports.test_predictions, *scores["test"])
        per_class_accuracy(*scores["test"]).to_csv(reports.per_class, index=False)
    print(
        f"{arguments.model}: test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}, "
        f"macro F1 {test['macro_f1']:.4f}; validation accuracy {validation_accuracy:.4f}"
    )
