"""What the data stages, the report and export do with one label per text (the classification
task's hooks; :class:`lmforge.tasks.classification.ClassificationTask` calls these)."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.core.config import Config
from lmforge.core.io import read_jsonl
from lmforge.tasks.base import TargetCountingTally


class LabelTally(TargetCountingTally):
    """Labels are counted by the prepare stage; a target beside them is refused."""


def labelled(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for record in read_jsonl(path):
        if record.get("label") is not None:
            texts.append(record["text"])
            labels.append(json.dumps(record["label"]))
    return texts, labels


def baselines(cfg: Config) -> dict:
    """Majority class and TF-IDF + logistic regression, fitted on train, scored on test."""
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    from sklearn.pipeline import make_pipeline

    prepared = Path(cfg.paths.prepared)
    train_x, train_y = labelled(prepared / "train.jsonl")
    test_x, test_y = labelled(prepared / "test.jsonl")
    systems = {
        "majority_class": DummyClassifier(strategy="most_frequent"),
        "tfidf_logreg": make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=2000, C=10.0),
        ),
    }
    results = {}
    for name, system in systems.items():
        system.fit(train_x, train_y)
        predicted = system.predict(test_x)
        precision, recall, f1, _ = precision_recall_fscore_support(
            test_y, predicted, average="macro", zero_division=0
        )
        results[name] = {
            "accuracy": accuracy_score(test_y, predicted),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    for name, values in results.items():
        print(f"baselines: {name}: accuracy {values['accuracy']:.4f}, macro F1 {values['f1']:.4f}")
    return results


def report_lines(finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
    lines = []
    if "best_val_f1" in finetune:
        lines.append(
            f"finetune  best val macro F1 {finetune['best_val_f1']:.4f} ({finetune['epochs']} epochs)"
        )
    if "accuracy" in evaluation:
        lines.append(
            f"test      accuracy {evaluation['accuracy']:.4f}  macro P {evaluation['precision']:.4f}"
            f"  R {evaluation['recall']:.4f}  F1 {evaluation['f1']:.4f}  ({evaluation['examples']} examples)"
        )
    if "ngram_weight" in evaluation and "encoder_accuracy" in evaluation:  # finetune.ngram_fusion
        lines.append(
            f"fusion    n-gram weight {evaluation['ngram_weight']:.2f} (chosen on validation); "
            f"the encoder alone: test accuracy {evaluation['encoder_accuracy']:.4f}"
        )
    for name, values in baselines.items():
        f1 = f"  macro F1 {values['f1']:.4f}" if "f1" in values else ""
        lines.append(f"baseline  {name:<15} accuracy {values['accuracy']:.4f}{f1}")
    return lines
