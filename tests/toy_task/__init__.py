"""A task from outside lmforge (tests/test_toy_task.py): is a text long or short?

It lives here, not under src/lmforge, and reaches lmforge through the ``lmforge.tasks`` entry
point group only. It reuses the classifier (head, loss, scoring) and brings its own typed
``task.*`` config, checks, collect/prepare tallies, shard labels, baselines and report lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.core.config import TaskConfig, _check
from lmforge.tasks.base import CollectTally, PrepareTally
from lmforge.tasks.classification import ClassificationTask


@dataclass
class LengthBucketConfig(TaskConfig):
    name: str = "length_bucket"
    # A text of at least this many characters is "long"; the label the data carries is ignored.
    threshold: int = 60

    def __post_init__(self) -> None:
        _check(self.threshold > 0, "task.threshold", "must be positive")


def bucket(text: str, threshold: int) -> str:
    return "long" if len(text) >= threshold else "short"


class Texts(CollectTally):
    def summary(self) -> str:
        return f"{self.labelled} texts to bucket by length"


class Buckets(PrepareTally):
    def __init__(self, threshold: int) -> None:
        self.threshold, self.long = threshold, 0

    def add(self, split: str, record: dict) -> None:
        self.long += split == "train" and bucket(record["text"], self.threshold) == "long"

    def finish(self, raw: Path, out: Path, names: list, summary: dict) -> str:
        summary["long_train_texts"] = self.long
        return f"{self.long} long train texts"


class LengthBucketTask(ClassificationTask):
    name = "length_bucket"
    config_class = LengthBucketConfig
    supports_fusion = False

    @classmethod
    def check(cls, cfg: Any) -> None:
        _check(cfg.task.threshold < cfg.data.clean.max_chars, "task.threshold", "no text is that long")

    def collect_tally(self, cfg: Any) -> CollectTally:
        return Texts()

    def prepare_tally(self, cfg: Any) -> PrepareTally:
        return Buckets(cfg.task.threshold)

    def write_shards(self, cfg: Any, tokenizer: Any, prepared: Path, specials: dict, checkpoint: Any) -> None:
        from lmforge.data.encode import write_text_shards

        def relabel(split: str, records: list[dict]) -> list[dict]:
            return [{**r, "label": bucket(r["text"], cfg.task.threshold)} for r in records]

        write_text_shards(cfg, tokenizer, prepared, specials, checkpoint, augment=relabel)

    def baselines(self, cfg: Any) -> dict:
        print("baselines: length_bucket: none (the threshold is the rule)")
        return {"rule": {"threshold": cfg.task.threshold}}

    def report_lines(self, finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
        return [f"length_bucket  best val F1 {finetune.get('best_val_f1', float('nan')):.4f}"]
