"""Cleaning, deduplication and the deterministic train/val/test split.

Everything streams: records go through one at a time, and the only state that grows with the
corpus is the deduplication table (:class:`DigestTable`): an 8-byte digest and a label number per
kept record, 12 bytes a slot in two flat arrays, 18-36 bytes a kept record with the table's free
slots (100 MB for 5 million records, 150 MB while it doubles), not a dict of Python objects
(~120 bytes a record).
Every dropped record is counted under a reason, so ``input = kept + sum(dropped)`` always holds
and is reported.

The one exception is ``data.split.group_substrings``: for phrase-level data such as SST-2, where
every phrase of every training sentence is a row of its own, a phrase must follow its sentence
into the same split, or validation measures recall of the training sentences. That needs every
text at once, so those records are held in memory until the split is decided.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tqdm import tqdm

from lmforge.core.config import CleanConfig, SplitConfig

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


def text_key(text: str) -> int:
    """A nonzero 64-bit digest of ``text``, the key deduplication stores.

    Two different texts share a key with probability about ``n**2 / 2**65`` over ``n`` texts
    (one in a million at 5 million texts); the later one would then be dropped as a duplicate.
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") or 1


class DigestTable:
    """A map from nonzero 64-bit keys (:func:`text_key`) to small ints, for deduplication.

    Open addressing with linear probing in two flat arrays (``array('Q')`` keys, ``array('i')``
    values: 12 bytes a slot), at most two-thirds full, doubled when that is reached. Memory is
    still linear in the number of keys (18-36 bytes each with the free slots), but a fifth of a
    dict or set of digests, whose every entry is a Python object.
    """

    def __init__(self, capacity: int = 1 << 12) -> None:
        capacity = 1 << max(3, (capacity - 1).bit_length())
        self._keys = array("Q", bytes(8 * capacity))
        self._values = array("i", bytes(4 * capacity))
        self._mask = capacity - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._mask + 1

    def _slot(self, key: int) -> int:
        keys, mask = self._keys, self._mask
        slot = key & mask
        while keys[slot] and keys[slot] != key:
            slot = (slot + 1) & mask
        return slot

    def get(self, key: int) -> int | None:
        slot = self._slot(key)
        return self._values[slot] if self._keys[slot] else None

    def setdefault(self, key: int, value: int) -> int | None:
        """The value stored for ``key``; if there is none, store ``value`` and return None."""
        if not key:
            raise ValueError("DigestTable keys are nonzero (0 marks a free slot)")
        slot = self._slot(key)
        if self._keys[slot]:
            return self._values[slot]
        self._keys[slot], self._values[slot] = key, value
        self._size += 1
        if 3 * self._size >= 2 * self.capacity:
            self._grow()
        return None

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        capacity = 2 * self.capacity
        self._keys = array("Q", bytes(8 * capacity))
        self._values = array("i", bytes(4 * capacity))
        self._mask = capacity - 1
        for key, value in zip(keys, values, strict=True):
            if key:
                slot = self._slot(key)
                self._keys[slot], self._values[slot] = key, value


def assign_split(text: str, cfg: SplitConfig, holdout: tuple[str, ...] = ("test", "val")) -> str:
    """The split of a text, from a seeded hash of the text alone.

    Depending only on the text makes the split independent of record order and corpus size,
    and identical texts (were any left) could never land in two splits. ``holdout`` names the
    splits still to cut (a source with its own test split only needs val).
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(cfg.seed).encode()).digest()
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


def group_substrings(texts: list[str], own: list[str]) -> list[str]:
    """The split of every text when a text that occurs inside a longer one (as whole words) must
    not be held out apart from it; ``own[i]`` is the split ``texts[i]`` takes on its own.

    Roots — texts inside no longer text — keep their own split. Any other text goes to train if
    a train root contains it (held out, it would be a piece of a training text), else to the
    split of the first root, longest first, that contains it. Held-out rows are then whole
    held-out texts and their own pieces, as a benchmark's dev sentences are. Texts are
    whitespace-normalised, so a word span is a slice between two spaces.
    """
    index = {text: i for i, text in enumerate(texts)}
    lengths = {text.count(" ") + 1 for text in texts}
    splits: list[str | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), texts[i]))
    for i in tqdm(
        order, desc="prepare (phrases follow their sentences)", unit=" texts", mininterval=1.0, disable=None
    ):
        if splits[i] is not None:
            continue  # inside a longer text: placed when that text was
        text, name = texts[i], own[i]
        splits[i] = name
        spaces = [m.start() for m in re.finditer(" ", text)]
        starts, ends = [0] + [p + 1 for p in spaces], spaces + [len(text)]
        for a, start in enumerate(starts):
            for b in range(a, len(ends)):
                if b - a + 1 not in lengths or (a, b) == (0, len(ends) - 1):
                    continue
                j = index.get(text[start : ends[b]])
                if j is not None and (splits[j] is None or name == "train"):
                    splits[j] = name
    return splits


def _own_split(text: str, given: str | None, cfg: SplitConfig) -> str:
    if not given:
        return assign_split(text, cfg)
    if given == "train":
        # A predefined train split still gives up its validation share, by the same hash.
        return assign_split(text, cfg, holdout=("val",))
    return given


def clean_and_split(
    records: Iterable[dict], clean: CleanConfig, split: SplitConfig, report: CleaningReport
) -> Iterator[tuple[str, dict]]:
    """Yield ``(split, record)`` for every record that survives cleaning, counting the rest.

    Reasons: ``empty`` (None, non-string or whitespace-only text), ``too_short``, ``too_long``
    (characters, after normalisation), ``duplicate`` (same normalised text and label as an
    earlier record) and ``duplicate_label_conflict`` (same text, another label: the first wins,
    and the count tells the user their labels disagree).

    Text-to-text records (those with a ``target`` key) have their target normalised the same
    way; an empty target is dropped as ``empty_target``, one over ``max_chars`` as
    ``too_long_target`` (``min_chars`` applies to the source only: a translation or summary may
    be one word). A duplicate is the same (text, target) pair; the same text with another
    target is kept (translations differ), and since the split hashes the text alone, both land
    in one split. Deduplicating before the split is what
    keeps any text out of two splits. With ``split.group_substrings`` the records whose split
    prepare decides (no predefined split, or train) are split by :func:`group_substrings`.
    """
    kept = _clean(records, clean, report)
    if split.group_substrings:
        kept = list(kept)
        free = [i for i, record in enumerate(kept) if record.get("split") in (None, "", "train")]
        texts = [kept[i]["text"] for i in free]
        placed = dict(
            zip(
                free,
                group_substrings(
                    texts, [_own_split(kept[i]["text"], kept[i].get("split"), split) for i in free]
                ),
                strict=True,
            )
        )
    else:
        placed = {}
    for i, record in enumerate(kept):
        name = placed.get(i) or _own_split(record["text"], record.get("split"), split)
        report.kept += 1
        report.per_split[name] += 1
        yield name, record


def _clean(records: Iterable[dict], clean: CleanConfig, report: CleaningReport) -> Iterator[dict]:
    seen = DigestTable()
    # Labels are stored in the table by number, in order of first appearance.
    label_ids: dict[object, int] = {}
    for record in records:
        report.input_rows += 1
        if "words" in record:
            tagged = _clean_tagged(record, clean, report, seen)
            if tagged is not None:
                yield tagged
            continue
        raw = record.get("text")
        text = normalize_text(raw, clean) if isinstance(raw, str) else ""
        paired = "target" in record
        raw_target = record.get("target")
        target = normalize_text(raw_target, clean) if isinstance(raw_target, str) else ""
        if not text:
            report.dropped["empty"] += 1
            continue
        if paired and not target:
            report.dropped["empty_target"] += 1
            continue
        if len(text) < clean.min_chars:
            report.dropped["too_short"] += 1
            continue
        if len(text) > clean.max_chars:
            report.dropped["too_long"] += 1
            continue
        if paired and len(target) > clean.max_chars:
            report.dropped["too_long_target"] += 1
            continue
        if paired:
            # NUL cannot occur in normalised text (control characters are removed), so the
            # joined pair is unambiguous.
            if seen.setdefault(text_key(text + "\0" + target), 0) is not None:
                report.dropped["duplicate"] += 1
                continue
            yield {**record, "text": text, "target": target}
            continue
        label = label_ids.setdefault(record.get("label"), len(label_ids))
        first = seen.setdefault(text_key(text), label)
        if first is not None:
            reason = "duplicate" if first == label else "duplicate_label_conflict"
            report.dropped[reason] += 1
            continue
        yield {**record, "text": text}


def _clean_tagged(record: dict, clean: CleanConfig, report: CleaningReport, seen: DigestTable) -> dict | None:
    """A word-tagged sentence: each word normalised on its own (NFKC by default; whitespace
    inside a word collapsed to one space), so words and tags stay aligned. Dropped and counted:
    ``empty`` (no words), ``empty_word`` (a word that normalises to nothing: a control
    character), ``too_long`` (the joined sentence over ``max_chars``; ``min_chars`` does not
    apply: a one-word sentence is a sentence) and ``duplicate`` (same words and same tags; the
    same words tagged differently are both kept, in one split since the split hashes the text).
    A predefined test split keeps its repeated sentences ("Thanks .", "Regards ,": 88 in EWT
    dev), so it is scored as published; a train copy of a test sentence is still dropped, since
    held-out splits are read first.
    """
    words = [normalize_text(w, clean) if isinstance(w, str) else "" for w in record["words"]]
    tags = [str(t) for t in record.get("tags") or []]
    if not words:
        report.dropped["empty"] += 1
        return None
    if not all(words):
        report.dropped["empty_word"] += 1
        return None
    text = " ".join(words)
    if len(text) > clean.max_chars:
        report.dropped["too_long"] += 1
        return None
    # Unit and record separators cannot occur in normalised words (control characters go).
    known = seen.setdefault(text_key("\x1f".join(words) + "\x1e" + "\x1f".join(tags)), 0)
    if known is not None and record.get("split") != "test":
        report.dropped["duplicate"] += 1
        return None
    return {**record, "text": text, "words": words, "tags": tags}
