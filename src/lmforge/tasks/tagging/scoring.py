"""Tagging scores per word with torchmetrics (accuracy, macro and per-tag precision/recall/F1,
the tag confusion matrix) and, for BIO/BIOES tag sets, entity-level span scores
(:mod:`lmforge.tasks.tagging.spans`); on a split's shards or on any tagged file.

Tags the model cannot predict (absent from its training data) stay in the scoring as classes of
their own: every word carrying one is scored wrong, and they are counted (``unseen_tag_words``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import load_json, load_weights


def load_tagger(folder: Path) -> tuple[Any, dict, Any]:
    """The finetuned tagger (eval mode), its config.json and its tokenizer."""
    from tokenizers import Tokenizer

    from lmforge.models.tagger import tagger_from_config

    config = load_json(folder / "config.json", "finetune")
    if "hf" in config:
        from lmforge.lit.workspace import HF_FOLDER
        from lmforge.models.hf import HFTagger

        model = HFTagger.load(folder / HF_FOLDER, config["hf"]["trust_remote_code"])
    else:
        model = load_weights(tagger_from_config(config), folder / "model.pt", "finetune")
    model.eval()
    return model, config, Tokenizer.from_file(str(folder / "tokenizer.json"))


def predict_words(model: Any, batches: Any) -> tuple[list[int], list[int]]:
    """Predicted and gold tag ids of every word the batches mark (``word_mask``), in order."""
    import torch

    predicted, gold = [], []
    with torch.inference_mode():
        for batch in batches:
            logits = model(batch["input_ids"], batch["attention_mask"], batch["features"])
            mask = batch["word_mask"]
            predicted.extend(logits.argmax(-1)[mask].tolist())
            gold.extend(batch["tags"][mask].tolist())
    return predicted, gold


def loader(dataset: Any, batch_size: int, pad: int) -> Any:
    from torch.utils.data import DataLoader

    from lmforge.data.tagging import TagCollate

    return DataLoader(dataset, batch_size=batch_size, collate_fn=TagCollate(pad))


def metric_name(tag: str) -> str:
    """A tag as an MLflow metric name (XPOS tags such as ``$`` or ``,`` are not allowed)."""
    return re.sub(r"[^\w\-. /]", lambda m: f"x{ord(m.group()):02x}", tag)


def score(
    names: list[str], num_model_tags: int, gold: list[int], predicted: list[int], sentence_lengths: list[int]
) -> tuple[dict, Any]:
    """The report (accuracy, macro and per-tag P/R/F1, counts, entity spans where the tags are
    BIO/BIOES) and the confusion matrix over ``names`` (the model's tags, then unseen ones)."""
    import torch
    from torchmetrics.classification import (
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    from lmforge.lit.classifier import classification_metrics
    from lmforge.tasks.tagging.spans import is_span_scheme, span_scores

    if not gold:
        raise UserError("no words to score; the split or file holds no tagged sentence")
    n = len(names)
    target, preds = torch.tensor(gold), torch.tensor(predicted)
    overall = {k: float(v) for k, v in classification_metrics(n)(preds, target).items()}
    per_tag = {
        k: metric(n, average="none")(preds, target).tolist()
        for k, metric in (
            ("precision", MulticlassPrecision),
            ("recall", MulticlassRecall),
            ("f1", MulticlassF1Score),
        )
    }
    matrix = MulticlassConfusionMatrix(n)(preds, target)
    support = matrix.sum(dim=1).tolist()
    unseen = {names[i]: support[i] for i in range(num_model_tags, n) if support[i]}
    report = {
        **overall,
        "words": len(gold),
        "sentences": len(sentence_lengths),
        "unseen_tag_words": sum(unseen.values()),
        "unseen_tags": unseen,
        "per_tag": {
            names[i]: {
                "precision": per_tag["precision"][i],
                "recall": per_tag["recall"][i],
                "f1": per_tag["f1"][i],
                "support": support[i],
            }
            for i in range(n)
        },
    }
    if is_span_scheme(names[:num_model_tags]):
        gold_tags, predicted_tags, start = [], [], 0
        for length in sentence_lengths:
            gold_tags.append([names[i] for i in gold[start : start + length]])
            predicted_tags.append([names[i] for i in predicted[start : start + length]])
            start += length
        report["entities"] = span_scores(gold_tags, predicted_tags)
    return report, matrix


# The most sentences the wrong-predictions table holds (those with the most wrong words first).
MAX_ERRORS = 1000


def errors_table(
    tokenizer: Any, sentences: list, names: list[str], gold: list[int], predicted: list[int]
) -> dict[str, list]:
    """The sentences with a word tagged wrong, those with the most wrong words first: ``text``
    (the words as the model read them), ``errors`` (how many), ``gold`` and ``predicted`` (each
    wrong word as ``word/TAG``), as columns (``mlflow.log_table``). ``gold`` and ``predicted``:
    every word's tag id, sentence after sentence (:func:`predict_words`)."""
    rows, start = [], 0
    for sentence in sentences:
        count = len(sentence.starts)
        wrong = [i for i in range(count) if gold[start + i] != predicted[start + i]]
        if wrong:
            rows.append((sentence, start, wrong))
        start += count
    rows.sort(key=lambda row: -len(row[2]))
    table: dict[str, list] = {"text": [], "errors": [], "gold": [], "predicted": []}
    for sentence, start, wrong in rows[:MAX_ERRORS]:
        ids = sentence.ids.tolist()
        ends = [*sentence.starts[1:].tolist(), len(ids)]
        words = [tokenizer.decode(ids[b:e]) for b, e in zip(sentence.starts.tolist(), ends, strict=True)]
        table["text"].append(" ".join(words))
        table["errors"].append(len(wrong))
        table["gold"].append(" ".join(f"{words[i]}/{names[gold[start + i]]}" for i in wrong))
        table["predicted"].append(" ".join(f"{words[i]}/{names[predicted[start + i]]}" for i in wrong))
    return table


def mlflow_metrics(report: dict, prefix: str) -> dict[str, float]:
    metrics = {f"{prefix}_{k}": report[k] for k in ("accuracy", "precision", "recall", "f1")}
    metrics[f"{prefix}_unseen_tag_words"] = report["unseen_tag_words"]
    metrics.update({f"{prefix}_f1_tag_{metric_name(t)}": v["f1"] for t, v in report["per_tag"].items()})
    if "entities" in report:
        metrics.update({f"{prefix}_entity_{k}": report["entities"][k] for k in ("precision", "recall", "f1")})
    return metrics


def summary(report: dict, where: str) -> str:
    text = (
        f"{where}: word accuracy {report['accuracy']:.4f}, macro P/R/F1 "
        f"{report['precision']:.4f}/{report['recall']:.4f}/{report['f1']:.4f} on "
        f"{report['words']} words in {report['sentences']} sentences"
    )
    if "entities" in report:
        e = report["entities"]
        text += (
            f"; entities P/R/F1 {e['precision']:.4f}/{e['recall']:.4f}/{e['f1']:.4f} "
            f"({e['support']} gold spans)"
        )
    if report["unseen_tag_words"]:
        text += (
            f"; {report['unseen_tag_words']} words carry tags the model never saw "
            f"({', '.join(report['unseen_tags'])}), scored wrong"
        )
    if report.get("split_sentences"):
        text += f"; {report['split_sentences']} sentences longer than the context were tagged in windows"
    return text


def read_tagged_file(cfg: Config, path: Path) -> list[dict]:
    """The file's sentences, words normalised as in training, read with ``data.source``'s
    format and column options."""
    from lmforge.data.cleaning import normalize_text
    from lmforge.data.sources import read_local

    source = cfg.data.source
    records = []
    for record in read_local(
        path,
        format=source.format,
        encoding=source.encoding or "utf-8",
        words_column=source.words_column,
        tags_column=source.tags_column,
        label_column=None,
    ):
        if "words" not in record:
            raise UserError(
                f"{path}: not a tagged file (no words and tags per record); use a "
                ".conllu/.conll file or set data.source.tags_column (and "
                "data.source.words_column) for jsonl/parquet"
            )
        if not record["words"]:
            continue
        words = [normalize_text(w, cfg.data.clean) or w for w in record["words"]]
        records.append({**record, "words": words})
    if not records:
        raise UserError(f"{path}: no sentence with words; check the file and data.source options")
    return records


def tag_ids(records: list[dict], tags: list[str]) -> tuple[list[list[int]], list[str], dict]:
    """Each sentence's tag ids over the model's ``tags``; a tag the model does not know gets an
    id after them (scored wrong). Returns the ids, every name and the unseen tags' first
    source."""
    names = list(tags)
    index = {t: i for i, t in enumerate(names)}
    first: dict[str, str] = {}
    ids = []
    for record in records:
        row = []
        for tag in record["tags"]:
            if tag not in index:
                index[tag] = len(names)
                names.append(tag)
                first[tag] = record["source"]
            row.append(index[tag])
        ids.append(row)
    return ids, names, first
