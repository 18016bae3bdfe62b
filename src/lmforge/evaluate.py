"""Stage 6, evaluate: score the finetuned classifier with torchmetrics.

By default on the test split of ``data/shards``, writing ``metrics/eval.json`` (accuracy, macro
precision/recall/F1, per-class figures), ``plots/confusion.csv`` (for ``dvc plots show``) and
``plots/confusion.png``. With ``eval.file=PATH`` it scores any labelled file instead (same readers
and options as ``data.source``) and writes ``eval.output`` (default ``metrics/eval_file.json``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.errors import UserError
from lmforge.io import atomic_file, write_json


def load_classifier(folder: Path):
    """The finetuned model (eval mode), its label names, tokenizer and max length."""
    import torch
    from tokenizers import Tokenizer

    from lmforge.models.transformer import SequenceClassifier, TransformerConfig

    if not (folder / "model.pt").is_file():
        raise UserError(f"{folder}/model.pt is missing; run the finetune stage first")
    config = json.loads((folder / "config.json").read_text())
    model = SequenceClassifier(TransformerConfig(**config["model"]),
                               num_labels=len(config["labels"]), pooling=config["pooling"])
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, config["labels"], Tokenizer.from_file(str(folder / "tokenizer.json")), \
        config["max_len"]


def score(model, batches, num_classes: int):
    """Run the model over ``(input_ids, attention_mask, labels)`` batches; return metrics."""
    import torch
    from torchmetrics.classification import (
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    from lmforge.lit.classifier import classification_metrics

    overall = classification_metrics(num_classes)
    per_class = {"precision": MulticlassPrecision(num_classes, average="none"),
                 "recall": MulticlassRecall(num_classes, average="none"),
                 "f1": MulticlassF1Score(num_classes, average="none")}
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
    return ({k: float(v) for k, v in overall.compute().items()},
            {k: v.compute().tolist() for k, v in per_class.items()},
            confusion.compute(), torch.cat(targets).tolist(), torch.cat(predictions).tolist())


def report(labels: list, overall: dict, per_class: dict, support: list[int]) -> dict:
    return {
        **overall,
        "examples": sum(support),
        "per_class": {str(name): {"precision": per_class["precision"][i],
                                  "recall": per_class["recall"][i], "f1": per_class["f1"][i],
                                  "support": support[i]} for i, name in enumerate(labels)},
    }


def confusion_png(matrix, labels: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    peak = matrix.max() or 1
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, int(value), ha="center", va="center",
                color="white" if value > peak / 2 else "black", fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run(cfg: Config) -> None:
    folder = Path(cfg.paths.finetuned)
    if cfg.eval.file:
        return evaluate_file(cfg, folder)

    from torch.utils.data import DataLoader

    from lmforge.data.datasets import LabelledRecords, pad_batch
    from lmforge.data.tokenization import TokenShards
    from lmforge.tracking import pipeline_id, stage_run

    model, labels, _, max_len = load_classifier(folder)
    shards = TokenShards(cfg.paths.shards, "test")
    test = LabelledRecords(shards, max_len)
    if len(test) == 0:
        raise UserError(f"{cfg.paths.shards}: the test split holds no labelled records")
    pad = shards.meta["special_ids"]["pad"]
    loader = DataLoader(test, batch_size=cfg.eval.batch_size,
                        collate_fn=lambda items: pad_batch(items, pad))
    overall, per_class, matrix, actual, predicted = score(model, loader, len(labels))
    support = matrix.sum(dim=1).tolist()
    result = report(labels, overall, per_class, support)

    metrics_path = Path(cfg.paths.metrics) / "eval.json"
    plots = Path(cfg.paths.plots)
    plots.mkdir(parents=True, exist_ok=True)
    write_json(metrics_path, result)
    with atomic_file(plots / "confusion.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows((labels[a], labels[p]) for a, p in zip(actual, predicted, strict=True))
    confusion_png(matrix.numpy(), labels, plots / "confusion.png",
                  f"test: accuracy {overall['accuracy']:.3f}, macro F1 {overall['f1']:.3f}")

    upstream = json.loads((folder / "meta.json").read_text())
    with stage_run(cfg, "evaluate", pipeline_id(folder / "meta.json"),
                   extra_tags={"lmforge.finetune_run_id": upstream["mlflow_run_id"]}):
        import mlflow

        mlflow.log_metrics({f"test_{k}": v for k, v in overall.items()})
        for name, values in result["per_class"].items():
            mlflow.log_metrics({f"test_f1_class_{name}": values["f1"]})
        for path in (metrics_path, plots / "confusion.png", plots / "confusion.csv"):
            mlflow.log_artifact(str(path))
    print(f"evaluate: test accuracy {overall['accuracy']:.4f}, macro P/R/F1 "
          f"{overall['precision']:.4f}/{overall['recall']:.4f}/{overall['f1']:.4f} "
          f"on {len(test)} examples -> {metrics_path}")


def file_batches(records: list[dict], tokenizer, index: dict[str, int], max_len: int,
                 batch_size: int, special: dict[str, int]):
    """Encode raw labelled records the way the shards were (no specials, then [CLS] ... [SEP])."""
    from lmforge.data.datasets import frame_record, pad_batch

    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        encodings = tokenizer.encode_batch_fast([r["text"] for r in chunk],
                                                add_special_tokens=False)
        items = [(frame_record(e.ids, max_len, special["cls"], special["sep"]),
                  index[str(r["label"])]) for e, r in zip(encodings, chunk, strict=True)]
        yield pad_batch(items, special["pad"])


def evaluate_file(cfg: Config, folder: Path) -> None:
    """Score the finetuned model on any labelled file, read with the ``data.source`` options."""
    from lmforge.data.cleaning import normalize_text
    from lmforge.data.sources import read_local
    from lmforge.data.tokenization import special_ids

    path = Path(cfg.eval.file)
    source = cfg.data.source
    model, labels, tokenizer, max_len = load_classifier(folder)
    index = {str(name): i for i, name in enumerate(labels)}
    label_column = source.label_column or "label"
    records, empty = [], 0
    for record in read_local(path, text_columns=source.text_columns, label_column=label_column,
                             format=source.format):
        if str(record["label"]) not in index:
            raise UserError(f"{record['source']}: label {record['label']!r} is not one the model "
                            f"knows ({', '.join(map(str, labels))}); fix the row or the label column")
        text = normalize_text(record["text"], cfg.data.clean)
        if text:
            records.append({**record, "text": text})
        else:
            empty += 1
    if not records:
        raise UserError(f"{path}: no row with text; check data.source.text_columns")
    batches = file_batches(records, tokenizer, index, max_len, cfg.eval.batch_size, special_ids())
    overall, per_class, matrix, _, _ = score(model, batches, len(labels))
    result = report(labels, overall, per_class, matrix.sum(dim=1).tolist())
    result.update({"file": str(path), "dropped_empty_text": empty})
    output = Path(cfg.eval.output or Path(cfg.paths.metrics) / "eval_file.json")
    write_json(output, result)
    print(f"evaluate: {path}: accuracy {overall['accuracy']:.4f}, macro F1 {overall['f1']:.4f} "
          f"on {len(records)} examples ({empty} rows without text skipped) -> {output}")


main = stage(run)

if __name__ == "__main__":
    main()
