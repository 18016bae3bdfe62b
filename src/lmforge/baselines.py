"""Reference scores on the same test split: majority class and TF-IDF + logistic regression.

They put the Transformer's figure in context: ``metrics/baselines.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.io import read_jsonl, write_json


def labelled(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for record in read_jsonl(path):
        if record.get("label") is not None:
            texts.append(record["text"])
            labels.append(json.dumps(record["label"]))
    return texts, labels


def run(cfg: Config) -> None:
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
        "tfidf_logreg": make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2,
                                                      sublinear_tf=True),
                                      LogisticRegression(max_iter=2000, C=10.0)),
    }
    results = {}
    for name, system in systems.items():
        system.fit(train_x, train_y)
        predicted = system.predict(test_x)
        precision, recall, f1, _ = precision_recall_fscore_support(
            test_y, predicted, average="macro", zero_division=0)
        results[name] = {"accuracy": accuracy_score(test_y, predicted), "precision": precision,
                         "recall": recall, "f1": f1}
    write_json(Path(cfg.paths.metrics) / "baselines.json", results)
    for name, values in results.items():
        print(f"baselines: {name}: accuracy {values['accuracy']:.4f}, macro F1 {values['f1']:.4f}")


main = stage(run)

if __name__ == "__main__":
    main()
