"""Reference scores on the same test split: majority class and TF-IDF + logistic regression,
for text-to-text data the lead and retrieval baselines, for word-tagged data the most frequent
tag per word form.

They put the Transformer's figure in context: ``metrics/baselines.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.errors import UserError
from lmforge.io import read_jsonl, write_json


def labelled(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for record in read_jsonl(path):
        if record.get("label") is not None:
            texts.append(record["text"])
            labels.append(json.dumps(record["label"]))
    return texts, labels


# A sentence ends at . ! or ? followed by whitespace; good enough for a baseline's first sentence
# (abbreviations such as "e.g. x" cut it short, as they would for any simple splitter).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (the whole text when there is none)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def pairs(path: Path) -> tuple[list[str], list[str]]:
    sources, targets = [], []
    for record in read_jsonl(path):
        sources.append(record["text"])
        targets.append(record["target"])
    return sources, targets


def has_targets(path: Path) -> bool:
    return "target" in next(iter(read_jsonl(path)), {})


def text_to_text_predictions(prepared: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The baselines' outputs on the test split, ``lead`` (the source's first sentence) and
    ``retrieval`` (the target of the nearest training source by TF-IDF), and its references."""
    from lmforge.retrieval import NearestPairs

    train_x, train_y = pairs(prepared / "train.jsonl")
    test_x, test_y = pairs(prepared / "test.jsonl")
    if not test_x:
        raise UserError(
            f"{prepared / 'test.jsonl'} holds no pairs; raise data.split.test_fraction or add data"
        )
    predictions = {
        "lead": [first_sentence(x) for x in test_x],
        "retrieval": NearestPairs(train_x, train_y).nearest_targets(test_x),
    }
    return predictions, test_y


def text_to_text_baselines(prepared: Path) -> dict:
    """The :func:`text_to_text_predictions` baselines, scored on the test split."""
    from lmforge.text_metrics import score_texts

    predictions, test_y = text_to_text_predictions(prepared)
    return {
        name: {**score_texts(predicted, test_y), "pairs": len(test_y)}
        for name, predicted in predictions.items()
    }


def most_frequent_tags(sentences: list[dict]) -> tuple[dict[str, str], str]:
    """Each word form's most frequent tag (exact, case-sensitive form; ties: the tag seen first)
    and the most frequent tag overall (for unseen forms), from ``{"words", "tags"}`` records."""
    from collections import Counter

    per_word: dict[str, Counter] = {}
    overall: Counter = Counter()
    for record in sentences:
        for word, tag in zip(record["words"], record["tags"], strict=True):
            per_word.setdefault(word, Counter())[tag] += 1
            overall[tag] += 1
    # Counter.most_common keeps insertion order among equal counts: the tag seen first wins.
    return ({w: c.most_common(1)[0][0] for w, c in per_word.items()}, overall.most_common(1)[0][0])


def tagging_baselines(prepared: Path) -> dict:
    """The most-frequent-tag baseline, per word, on the test split: learnt from the train split
    (what the tagger trains on) and from train + val (the whole training file when validation is
    cut from it, as published baselines use), with accuracy on seen and unseen word forms."""
    train = list(read_jsonl(prepared / "train.jsonl"))
    val = list(read_jsonl(prepared / "val.jsonl"))
    test = list(read_jsonl(prepared / "test.jsonl"))
    if not test:
        raise UserError(f"{prepared / 'test.jsonl'} holds no sentences; add a test split")
    results = {}
    for name, source in (("most_frequent_tag", train), ("most_frequent_tag_train_and_val", train + val)):
        lexicon, fallback = most_frequent_tags(source)
        counts = {"seen": [0, 0], "unseen": [0, 0]}
        for record in test:
            for word, tag in zip(record["words"], record["tags"], strict=True):
                kind = "seen" if word in lexicon else "unseen"
                counts[kind][0] += lexicon.get(word, fallback) == tag
                counts[kind][1] += 1
        correct = counts["seen"][0] + counts["unseen"][0]
        words = counts["seen"][1] + counts["unseen"][1]
        results[name] = {
            "accuracy": correct / words,
            "correct": correct,
            "words": words,
            "unseen_words": counts["unseen"][1],
            "unseen_tag": fallback,
            **{f"accuracy_{k}": (v[0] / v[1] if v[1] else 0.0) for k, v in counts.items()},
        }
    return results


def run(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    if not (prepared / "train.jsonl").is_file():
        raise UserError(f"{prepared} is incomplete; run the prepare stage first (dvc repro prepare)")
    if (prepared / "tags.json").is_file():
        results = tagging_baselines(prepared)
        write_json(Path(cfg.paths.metrics) / "baselines.json", results)
        for name, values in results.items():
            print(
                f"baselines: {name}: word accuracy {values['accuracy']:.4f} "
                f"({values['correct']}/{values['words']}; unseen forms {values['unseen_words']}"
                f", {values['accuracy_unseen']:.4f} right)"
            )
        return
    if has_targets(prepared / "train.jsonl"):
        results = text_to_text_baselines(prepared)
        write_json(Path(cfg.paths.metrics) / "baselines.json", results)
        for name, values in results.items():
            print(
                f"baselines: {name}: ROUGE-1/2/L/Lsum {values['rouge1']:.2f} / {values['rouge2']:.2f}"
                f" / {values['rougeL']:.2f} / {values['rougeLsum']:.2f}, "
                f"SacreBLEU {values['sacrebleu']:.2f}, chrF {values['chrf']:.2f} "
                f"({values['pairs']} test pairs)"
            )
        return
    classification_baselines(cfg)


def classification_baselines(cfg: Config) -> None:
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
    write_json(Path(cfg.paths.metrics) / "baselines.json", results)
    for name, values in results.items():
        print(f"baselines: {name}: accuracy {values['accuracy']:.4f}, macro F1 {values['f1']:.4f}")


main = stage(run)

if __name__ == "__main__":
    main()
