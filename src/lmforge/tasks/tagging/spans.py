"""Entity-level precision, recall and F1 over exact spans for BIO / BIOES tags, computed as
seqeval does in its default (CoNLL ``conlleval``) mode, without the dependency.

A span is ``(type, first word, last word)``; a predicted span counts only when a gold span has
the same type and the same boundaries. Ill-formed sequences are read leniently, as conlleval
reads them: an ``I-`` with no ``B-`` before it starts a span, an ``I-`` or ``E-`` whose type
differs from the running span's starts a new one, ``S-`` is a one-word span and ``E-`` closes
its span.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_SCHEMED = re.compile(r"^(O|[BIES]-.+)$")


def is_span_scheme(tags: Sequence[str]) -> bool:
    """True when every tag is ``O`` or ``B-/I-/E-/S-TYPE``, with at least one ``B-`` or ``S-``."""
    return bool(tags) and all(_SCHEMED.match(t) for t in tags) and any(t[:2] in ("B-", "S-") for t in tags)


def _split(tag: str) -> tuple[str, str]:
    if tag == "O" or not tag:
        return "O", "_"
    prefix, _, kind = tag.partition("-")
    return prefix[:1], kind or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag != "O" and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_type != type_


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The ``(type, first, last)`` spans of one sentence's tags (inclusive word indices)."""
    spans = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        kind, type_ = _split(tag)
        if _ends(prev_tag, kind, prev_type, type_):
            spans.append((prev_type, begin, i - 1))
        if _starts(prev_tag, kind, prev_type, type_):
            begin = i
        prev_tag, prev_type = kind, type_
    return spans


def _prf(correct: int, predicted: int, gold: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": gold,
        "predicted": predicted,
        "correct": correct,
    }


def span_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/F1 over all spans of all sentences, and per entity type."""
    counts: dict[str, Counter] = {"correct": Counter(), "predicted": Counter(), "gold": Counter()}
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans = set(entity_spans(gold_tags))
        predicted_spans = set(entity_spans(predicted_tags))
        counts["gold"].update(s[0] for s in gold_spans)
        counts["predicted"].update(s[0] for s in predicted_spans)
        counts["correct"].update(s[0] for s in gold_spans & predicted_spans)
    types = sorted(set(counts["gold"]) | set(counts["predicted"]))
    total = {k: sum(v.values()) for k, v in counts.items()}
    return {
        **_prf(total["correct"], total["predicted"], total["gold"]),
        "per_type": {t: _prf(counts["correct"][t], counts["predicted"][t], counts["gold"][t]) for t in types},
    }
