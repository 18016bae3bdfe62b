"""Cleaning, deduplication and the deterministic train/val/test split.

Everything streams: records go through one at a time, and the only state that grows with the
corpus is a map from 16-byte text digests to labels, for deduplication. Every dropped record is
counted under a reason, so ``input = kept + sum(dropped)`` always holds and is reported.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from lmforge.config import CleanConfig, SplitConfig

_WHITESPACE = re.compile(r"\s+")
# Control characters other than whitespace survive NFKC and confuse tokenizers.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

SPLITS = ("train", "val", "test")


def normalize_text(text: str, cfg: CleanConfig) -> str:
    """Unicode normalisation, control characters removed, runs of whitespace collapsed."""
    if cfg.normalization != "none":
        text = unicodedata.normalize(cfg.normalization, text)
    text = _WHITESPACE.sub(" ", _CONTROL.sub("", text)).strip()
    return text.lower() if cfg.lowercase else text


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def assign_split(text: str, cfg: SplitConfig, holdout: tuple[str, ...] = ("test", "val")) -> str:
    """The split of a text, from a seeded hash of the text alone.

    Depending only on the text makes the split independent of record order and corpus size,
    and identical texts (were any left) could never land in two splits. ``holdout`` names the
    splits still to cut (a source with its own test split only needs val).
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8,
                             key=str(cfg.seed).encode()).digest()
    position = int.from_bytes(digest, "big") / 2**64
    if "test" in holdout:
        if position < cfg.test_fraction:
            return "test"
        position -= cfg.test_fraction
    if "val" in holdout and position < cfg.val_fraction:
        return "val"
    return "train"


@dataclass
class CleaningReport:
    input_rows: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    per_split: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "input_rows": self.input_rows,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "per_split": {s: self.per_split.get(s, 0) for s in SPLITS},
        }

    def check_balance(self) -> None:
        if self.input_rows != self.kept + sum(self.dropped.values()):
            raise AssertionError(f"cleaning lost rows: {self.as_dict()}")


def clean_and_split(records: Iterable[dict], clean: CleanConfig, split: SplitConfig,
                    report: CleaningReport) -> Iterator[tuple[str, dict]]:
    """Yield ``(split, record)`` for every record that survives cleaning, counting the rest.

    Reasons: ``empty`` (None, non-string or whitespace-only text), ``too_short``, ``too_long``
    (characters, after normalisation), ``duplicate`` (same normalised text and label as an
    earlier record) and ``duplicate_label_conflict`` (same text, another label: the first wins,
    and the count tells the user their labels disagree). Deduplicating before the split is what
    keeps any text out of two splits.
    """
    seen: dict[bytes, object] = {}
    for record in records:
        report.input_rows += 1
        raw = record.get("text")
        text = normalize_text(raw, clean) if isinstance(raw, str) else ""
        if not text:
            report.dropped["empty"] += 1
            continue
        if len(text) < clean.min_chars:
            report.dropped["too_short"] += 1
            continue
        if len(text) > clean.max_chars:
            report.dropped["too_long"] += 1
            continue
        digest = text_digest(text)
        label = record.get("label")
        if digest in seen:
            reason = "duplicate" if seen[digest] == label else "duplicate_label_conflict"
            report.dropped[reason] += 1
            continue
        seen[digest] = label
        name = record.get("split") or assign_split(text, split)
        if name == "train" and record.get("split"):
            # A predefined train split still gives up its validation share, by the same hash.
            name = assign_split(text, split, holdout=("val",))
        report.kept += 1
        report.per_split[name] += 1
        yield name, {**record, "text": text}
