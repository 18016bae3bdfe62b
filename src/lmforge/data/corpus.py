"""An unlabelled pretraining corpus beside the task data: reading it, cleaning it, and keeping
every text of the task's val and test splits out of it.

Records are ``{"text", "source"}``: only the configured text columns are read, never a label.
The held-out guarantee: a corpus text is compared with every val/test text (sources and, for
text-to-text data, targets) in a matching form that ignores case, punctuation, HTML tags and
Penn-Treebank tokenization ("does n't" = "doesn't"); it is dropped when the two are equal, or
when it contains a val/test text of at least ``corpus.holdout_min_words`` words as a run of whole
words. A text-to-text target is the answer itself, so it is looked for inside from
``corpus.holdout_target_min_words`` words (docsum's summaries are short: "Return EntryPoint
objects for all installed packages." sits in a vendored copy's docstring with another body).
Both are counted (``holdout_equal``, ``holdout_contains``) in the corpus cleaning report.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.core.config import CleanConfig, CorpusCleanConfig, CorpusSourceConfig, SplitConfig
from lmforge.core.errors import UserError
from lmforge.core.io import input_path
from lmforge.data.cleaning import CleaningReport, DigestTable, assign_split, normalize_text, text_key
from lmforge.data.docstrings import DocstringScan, read_docstrings
from lmforge.data.readers import Record

_TAG = re.compile(r"<[^<>]{0,200}>")
_WORD = re.compile(r"\w+")
# Penn Treebank: punctuation stands apart, clitics split off ("does n't", "it 's").
_PUNCTUATION = re.compile(r'([.,!?;:()"\[\]{}]|--)')
_NEGATION = re.compile(r"(?i)(\w)(n't)\b")
_CLITIC = re.compile(r"(?i)(\w)('s|'re|'ve|'ll|'d|'m)\b")
_SPACES = re.compile(r"\s+")
# For matching only: PTB clitics rejoined, PTB bracket tokens (-lrb-) and apostrophes dropped.
_SPLIT_CLITIC = re.compile(r"(?i)\s+(n't|'s|'re|'ve|'ll|'d|'m)\b")
_PTB_BRACKET = re.compile(r"(?i)-[lr][rsc]b-")


def corpus_records(source: CorpusSourceConfig, docstrings: DocstringScan | None = None) -> Iterator[Record]:
    """Every record of the corpus source, ``{"text", "source"}``, in source order; ``docstrings``
    receives the package list and counts of a ``docstrings`` source."""
    from lmforge.data.sources import iter_url, read_hf, read_local, read_stdlib

    kind, columns = source.kind, [str(c) for c in source.text_columns]
    if kind in ("local", "hf") and source.path:
        path = input_path(source.path)
        if not path.exists():
            raise UserError(
                f"{path}: no such corpus file or folder; point corpus.source.path at it "
                "(e.g. ../shared/data/imdb/reviews.csv) or set corpus=none"
            )
        records = read_local(
            path,
            text_columns=columns,
            label_column=None,
            format=source.format,
            encoding=source.encoding or "utf-8",
        )
    elif kind == "hf":
        records = read_hf(
            str(source.name),
            split=source.split or "train",
            text_columns=columns,
            label_column=None,
            cache_dir=source.cache_dir,
        )
    elif kind == "url":
        records = iter_url(
            str(source.url),
            cache_dir=source.cache_dir or str(Path.home() / ".cache" / "lmforge" / "downloads"),
            sha256=source.sha256,
            text_columns=columns,
            label_column=None,
            format=source.format,
            encoding=source.encoding or "utf-8",
        )
    elif kind == "stdlib":
        records = read_stdlib(top_k=0, stdlib_dir=source.path, min_chars=1)
    elif kind == "docstrings":
        records = read_docstrings(source.path or "requirements.lock", stats=docstrings)
    else:
        raise UserError(f"corpus.source.kind={kind!r} reads nothing; set corpus=imdb, corpus=docstrings, ...")
    try:
        for record in records:
            yield {"text": record["text"], "source": record["source"]}
    except UserError as exc:
        message = str(exc)
        if "has no column" in message:
            # The readers' advice names label_column too; a corpus has text columns only.
            message = message.split("; set ", 1)[0] + "; set corpus.source.text_columns to the text column(s)"
            raise UserError(message) from None
        raise


def match_words(text: str) -> list[str]:
    """The words two texts are compared by: case, punctuation, HTML tags, apostrophes and PTB
    tokenization ignored, so "It's a <br />gem!" and "it 's a gem" give the same words."""
    text = _TAG.sub(" ", unicodedata.normalize("NFKC", text))
    text = _SPLIT_CLITIC.sub(r"\1", _PTB_BRACKET.sub(" ", text))
    return _WORD.findall(text.replace("'", "").replace("\u2019", "").casefold())


class HoldoutIndex:
    """The task's val/test texts, to find them in corpus texts (see the module docstring).
    ``texts`` are looked for inside corpus texts from ``min_words`` words, ``targets`` from
    ``target_min_words`` (None: equal texts only); both are dropped when equal."""

    def __init__(
        self,
        texts: Iterable[str],
        min_words: int | None,
        targets: Iterable[str] = (),
        target_min_words: int | None = None,
    ) -> None:
        self.equal: set[str] = set()
        # Per run length k: the held-out word tuples, keyed by their first k words.
        self.by_head: dict[int, dict[tuple[str, ...], list[tuple[str, ...]]]] = {}
        self.texts = 0
        for group, k in ((texts, min_words), (targets, target_min_words)):
            for text in group:
                words = match_words(text)
                if not words:
                    continue
                self.texts += 1
                self.equal.add(" ".join(words))
                if k is not None and len(words) >= k:
                    self.by_head.setdefault(k, {}).setdefault(tuple(words[:k]), []).append(tuple(words))
        self.first_words = {head[0] for heads in self.by_head.values() for head in heads}

    @property
    def contained(self) -> int:
        """How many held-out texts are long enough to be looked for inside corpus texts."""
        return sum(len(v) for heads in self.by_head.values() for v in heads.values())

    def reason(self, text: str) -> str | None:
        """``holdout_equal``, ``holdout_contains`` or None (the text may be pretrained on)."""
        words = match_words(text)
        if " ".join(words) in self.equal:
            return "holdout_equal"
        for k, heads in self.by_head.items():
            for i in range(len(words) - k + 1):
                if words[i] not in self.first_words:
                    continue
                for held in heads.get(tuple(words[i : i + k]), ()):
                    if tuple(words[i : i + len(held)]) == held:
                        return "holdout_contains"
        return None


def heldout_texts(prepared: Path) -> tuple[list[str], list[str]]:
    """The task's prepared val and test texts, read once: ``(sources, targets)`` (targets empty
    but for text-to-text data)."""
    from lmforge.core.io import read_jsonl

    sources: list[str] = []
    targets: list[str] = []
    for split in ("val", "test"):
        path = prepared / f"{split}.jsonl"
        if not path.is_file():
            raise UserError(f"{path} is missing; run the prepare stage first (dvc repro prepare)")
        for record in read_jsonl(path):
            for key, found in (("text", sources), ("target", targets)):
                if isinstance(record.get(key), str):
                    found.append(record[key])
    return sources, targets


def tidy_text(text: str, clean: CorpusCleanConfig) -> str:
    """HTML tags out, Unicode normalised, whitespace collapsed, PTB spacing, as configured."""
    if clean.strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    text = normalize_text(
        text,
        CleanConfig(
            normalization=clean.normalization,
            lowercase=clean.lowercase,
            min_chars=clean.min_chars,
            max_chars=clean.max_chars,
        ),
    )
    if clean.split_punctuation:
        text = _CLITIC.sub(r"\1 \2", _NEGATION.sub(r"\1 \2", _PUNCTUATION.sub(r" \1 ", text)))
        text = _SPACES.sub(" ", text).strip()
    return text


@dataclass
class CorpusSplit:
    val_fraction: float
    seed: int

    def of(self, text: str) -> str:
        return assign_split(
            text, SplitConfig(val_fraction=self.val_fraction, seed=self.seed), holdout=("val",)
        )


def clean_corpus(
    records: Iterable[dict],
    clean: CorpusCleanConfig,
    holdout: HoldoutIndex,
    split: CorpusSplit,
    report: CleaningReport,
) -> Iterator[tuple[str, dict]]:
    """Yield ``(train|val, record)`` for every corpus record kept, counting each one dropped:
    ``empty``, ``too_short``, ``too_long`` (characters after tidying), ``holdout_equal``,
    ``holdout_contains`` (see :class:`HoldoutIndex`) and ``duplicate`` (a tidied text seen before)."""
    seen = DigestTable()
    for record in records:
        report.input_rows += 1
        raw = record.get("text")
        text = tidy_text(raw, clean) if isinstance(raw, str) else ""
        reason = None
        if not text:
            reason = "empty"
        elif len(text) < clean.min_chars:
            reason = "too_short"
        elif len(text) > clean.max_chars:
            reason = "too_long"
        else:
            reason = holdout.reason(text)
        if reason is None:
            reason = "duplicate" if seen.setdefault(text_key(text), 0) is not None else None
        if reason is not None:
            report.dropped[reason] += 1
            continue
        name = split.of(text)
        report.kept += 1
        report.per_split[name] += 1
        yield name, {"text": text, "source": record.get("source")}
