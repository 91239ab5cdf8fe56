"""evaluate stage: the kept model's validation accuracy, and its test metrics and predictions.

Keras loads the model folder the train stage wrote (cifar10/model.py) and scores it on
the prepared inputs it was trained on (the notebook's 2.9 fed raw pixels).
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
from cifar10.reports import read_best_epoch, write_metrics, write_predictions


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate the trained model and write the metrics and the tables."""
    parser = argparse.ArgumentParser(prog="python -m stages evaluate", description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True, help="train summary JSON")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions CSV")
    parser.add_argument("--per-class", type=Path, required=True, help="per-class accuracy CSV")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.evaluate

    epoch = read_best_epoch(arguments.summary)
    classifier = load_classifier(arguments.model)
    scores = {}
    for split in ("validation", "test"):
        inputs = read_model_inputs(arguments.prepared, split, classifier.preprocessing)
        scores[split] = inputs.labels, predict(classifier.model, inputs.images, params.batch_size)
    validation_accuracy = accuracy(*scores["validation"])
    test = test_metrics(*scores["test"])
    outputs = (arguments.metrics, arguments.predictions, arguments.per_class)
    with atomic_outputs(*outputs, before_commit=params_file.check_unchanged) as (
        metrics_file,
        predictions_file,
        per_class_file,
    ):
        write_metrics(metrics_file, validation_accuracy, epoch, test)
        write_predictions(predictions_file, *scores["test"])
        per_class_accuracy(*scores["test"]).to_csv(per_class_file, index=False)
    print(
        f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}, macro F1 "
        f"{test['macro_f1']:.4f}; validation accuracy {validation_accuracy:.4f}"
    )
