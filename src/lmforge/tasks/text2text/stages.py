"""What the data stages and the report do with source/target pairs (``{"text", "target"}``
records; the text2text task's hooks, called by :class:`lmforge.tasks.text2text.TextToTextTask`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from lmforge.metrics.text import format_scores
from lmforge.tasks.base import CollectTally, TargetCountingTally


class PairCount(CollectTally):
    def __init__(self) -> None:
        super().__init__()
        self.pairs = 0

    def add(self, record: dict) -> None:
        super().add(record)
        self.pairs += "target" in record

    def meta(self) -> dict:
        return {"pairs": self.pairs} if self.pairs else {}

    def summary(self) -> str:
        return f"{self.pairs} source/target pairs" if self.pairs else super().summary()


class PairTally(TargetCountingTally):
    """Counts the source/target pairs (the summary line says how many)."""

    def finish(self, raw: Path, out: Path, names: list, summary: dict) -> str:
        return f"{self.pairs} source/target pairs" if self.pairs else super().finish(raw, out, names, summary)


def retrieval_augmenter(cfg: Config, prepared: Path) -> Any:
    """With ``task.retrieval``, a function ``(split, records) -> records`` whose sources carry
    their nearest training pair's target in front (:mod:`lmforge.data.retrieval`): train sources
    leave themselves out, val and test sources search the train split only. None otherwise."""
    if not cfg.task.retrieval:
        return None
    from lmforge.data.retrieval import NearestPairs

    train = list(read_jsonl(prepared / "train.jsonl"))
    index = NearestPairs([r["text"] for r in train], [r["target"] for r in train])

    def augment(split: str, records: list[dict]) -> list[dict]:
        texts = index.augment([r["text"] for r in records], leave_one_out=split == "train")
        return [{**r, "text": text} for r, text in zip(records, texts, strict=True)]

    print(f"tokenize: task.retrieval: sources read with their nearest of {len(train)} training pairs")
    return augment


def write_pair_shards(
    cfg: Config, tokenizer: Any, prepared: Path, specials: dict, checkpoint: dict | None, texts: Any
) -> None:
    """Source shards and target shards (one joint vocabulary); with ``task.retrieval`` each
    source carries its nearest training pair's target in front."""
    from lmforge.data.encode import write_text_shards

    augment = retrieval_augmenter(cfg, prepared)
    write_text_shards(
        cfg, tokenizer, prepared, specials, checkpoint, targets=True, augment=augment, texts=texts
    )


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


def text_to_text_predictions(prepared: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The baselines' outputs on the test split, ``lead`` (the source's first sentence) and
    ``retrieval`` (the target of the nearest training source by TF-IDF), and its references."""
    from lmforge.data.retrieval import NearestPairs

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
    from lmforge.metrics.text import score_texts

    predictions, test_y = text_to_text_predictions(prepared)
    return {
        name: {**score_texts(predicted, test_y), "pairs": len(test_y)}
        for name, predicted in predictions.items()
    }


def baselines(cfg: Config) -> dict:
    results = text_to_text_baselines(Path(cfg.paths.prepared))
    for name, values in results.items():
        print(
            f"baselines: {name}: ROUGE-1/2/L/Lsum {values['rouge1']:.2f} / {values['rouge2']:.2f}"
            f" / {values['rougeL']:.2f} / {values['rougeLsum']:.2f}, "
            f"SacreBLEU {values['sacrebleu']:.2f}, chrF {values['chrf']:.2f} ({values['pairs']} test pairs)"
        )
    return results


def report_lines(finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
    lines = []
    if "best_val_loss" in finetune:
        lines.append(
            f"finetune  best val target loss {finetune['best_val_loss']:.4f} ({finetune['epochs']} epochs)"
        )
    if evaluation:
        lines.append("test      " + format_scores(evaluation, 4) + f"  ({evaluation['examples']} examples)")
    for name, values in baselines.items():
        lines.append(f"baseline  {name:<15} {format_scores(values, 4)}")
    return lines
