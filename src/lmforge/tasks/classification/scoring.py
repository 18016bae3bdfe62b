"""Classification scores with torchmetrics: accuracy, macro and per-class precision/recall/F1,
the confusion matrix; on a split's batches or on any labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import load_json, load_weights


def load_classifier(folder: Path) -> tuple[Any, list, Any, int]:
    """The finetuned model (eval mode), its label names, tokenizer and the length texts are
    cut to (its encoder's max length, or longer where an n-gram model beside it reads more)."""
    from tokenizers import Tokenizer

    from lmforge.models.transformer import classifier_from_config, input_len

    config = load_json(folder / "config.json", "finetune")
    if "hf" in config:
        from lmforge.lit.workspace import HF_FOLDER
        from lmforge.models.hf import HFClassifier

        model = HFClassifier.load(folder / HF_FOLDER, config["hf"]["trust_remote_code"])
    else:
        model = load_weights(classifier_from_config(config), folder / "model.pt", "finetune")
    model.eval()
    return model, config["labels"], Tokenizer.from_file(str(folder / "tokenizer.json")), input_len(config)


def score(
    model: Any, batches: Any, num_classes: int, probabilities: list | None = None
) -> tuple[dict, dict, Any, list, list]:
    """Run the model over ``(input_ids, attention_mask, labels)`` batches; return metrics.
    ``probabilities``: a list that receives each example's class probabilities (tensors, one
    per batch), for the tables and curves drawn from them."""
    import torch
    from torchmetrics.classification import (
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    from lmforge.lit.classifier import classification_metrics

    overall = classification_metrics(num_classes)
    per_class = {
        "precision": MulticlassPrecision(num_classes, average="none"),
        "recall": MulticlassRecall(num_classes, average="none"),
        "f1": MulticlassF1Score(num_classes, average="none"),
    }
    confusion = MulticlassConfusionMatrix(num_classes)
    predictions, targets = [], []
    with torch.inference_mode():
        for batch in batches:
            logits = model(batch["input_ids"], batch["attention_mask"])
            overall.update(logits, batch["labels"])
            for metric in per_class.values():
                metric.update(logits, batch["labels"])
            confusion.update(logits, batch["labels"])
            predictions.append(logits.argmax(-1))
            targets.append(batch["labels"])
            if probabilities is not None:
                probabilities.append(logits.float().softmax(-1))
    return (
        {k: float(v) for k, v in overall.compute().items()},
        {k: v.compute().tolist() for k, v in per_class.items()},
        confusion.compute(),
        torch.cat(targets).tolist(),
        torch.cat(predictions).tolist(),
    )


def report(labels: list, overall: dict, per_class: dict, support: list[int]) -> dict:
    return {
        **overall,
        "examples": sum(support),
        "per_class": {
            str(name): {
                "precision": per_class["precision"][i],
                "recall": per_class["recall"][i],
                "f1": per_class["f1"][i],
                "support": support[i],
            }
            for i, name in enumerate(labels)
        },
    }


def file_batches(
    records: list[dict],
    tokenizer: Any,
    index: dict[str, int],
    max_len: int,
    batch_size: int,
    special: dict[str, int],
):
    """Encode raw labelled records the way the shards were (no specials, then [CLS] ... [SEP])."""
    from lmforge.data.datasets import frame_record, pad_batch

    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        encodings = tokenizer.encode_batch_fast([r["text"] for r in chunk], add_special_tokens=False)
        items = [
            (frame_record(e.ids, max_len, special["cls"], special["sep"]), index[str(r["label"])])
            for e, r in zip(encodings, chunk, strict=True)
        ]
        yield pad_batch(items, special["pad"])


def read_labelled_file(cfg: Config, path: Path, labels: list) -> tuple[list[dict], int]:
    """The file's records (text normalised as in training) and how many had no text; a label the
    model does not know stops with the row."""
    from lmforge.data.cleaning import normalize_text
    from lmforge.data.sources import read_local

    source = cfg.data.source
    index = {str(name) for name in labels}
    records, empty = [], 0
    for record in read_local(
        path,
        text_columns=source.text_columns,
        label_column=source.label_column or "label",
        format=source.format,
    ):
        if str(record["label"]) not in index:
            raise UserError(
                f"{record['source']}: label {record['label']!r} is not one the model "
                f"knows ({', '.join(map(str, labels))}); fix the row or the label column"
            )
        text = normalize_text(record["text"], cfg.data.clean)
        if text:
            records.append({**record, "text": text})
        else:
            empty += 1
    if not records:
        raise UserError(f"{path}: no row with text; check data.source.text_columns")
    return records, empty


# The most examples the wrong-predictions table holds (the most confident mistakes first).
MAX_ERRORS = 1000


def errors_table(
    texts: Any, labels: list, actual: list[int], predicted: list[int], probabilities: Any
) -> dict[str, list]:
    """The examples the model got wrong, most confident first: ``text``, ``gold``,
    ``predicted``, ``probability`` (of the prediction) and ``gold_probability``, as columns
    (``mlflow.log_table``). ``texts(i)``: the text of example ``i``."""
    wrong = [i for i, (a, p) in enumerate(zip(actual, predicted, strict=True)) if a != p]
    wrong.sort(key=lambda i: -float(probabilities[i, predicted[i]]))
    wrong = wrong[:MAX_ERRORS]
    return {
        "text": [texts(i) for i in wrong],
        "gold": [str(labels[actual[i]]) for i in wrong],
        "predicted": [str(labels[predicted[i]]) for i in wrong],
        "probability": [round(float(probabilities[i, predicted[i]]), 4) for i in wrong],
        "gold_probability": [round(float(probabilities[i, actual[i]]), 4) for i in wrong],
    }
