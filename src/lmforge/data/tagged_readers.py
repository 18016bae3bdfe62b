"""Readers for word-tagged data (part-of-speech, named entities): one record per sentence.

Records are ``{"words": [str], "tags": [str], "text": " ".join(words), "label": None,
"source": "<file>:<line>"}``; ``text`` lets the stages that read text (the split hash, the
tokenizer's training text, pretraining) treat a sentence like any other record. Formats:

- **CoNLL-U** (Universal Dependencies): ten tab-separated columns per token line; the tag is
  UPOS (column 4) or XPOS (column 5), by ``tags_column`` (``upos``, the default, or ``xpos``).
  As UD defines them, a multiword range ``3-4`` is the surface token of syntactic words 3 and 4,
  and those words (not the range) are tagged; an empty node ``5.1`` is no word of the sentence.
  Both are skipped. Comments (``#``) are skipped; a blank line ends a sentence.
- **CoNLL** (CoNLL-2003 style): whitespace-separated columns, the word first and the tag in the
  last column (or the 0-based column ``tags_column``); a blank line ends a sentence and
  ``-DOCSTART-`` lines are skipped.
- **JSONL / parquet / Hugging Face**: a list of words (``words_column``) and a list of tags
  (``tags_column``) per row, of equal length.

Malformed input stops with one line naming the file and line (or row) and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError

CONLLU_TAG_COLUMNS = {"upos": 3, "xpos": 4}
CONLLU_COLUMNS = 10


def tagged_record(words: list[str], tags: list[str], source: str) -> dict:
    return {"text": " ".join(words), "words": words, "tags": tags, "label": None, "source": source}


def read_conllu(
    path: Path, lines: Iterator[tuple[int, str]], tags_column: str | None = None
) -> Iterator[dict]:
    """Sentences of a CoNLL-U file (see the module docstring); ``lines`` yields
    ``(line_number, line)`` as :func:`lmforge.data.readers._lines` does."""
    column_name = (tags_column or "upos").lower()
    if column_name not in CONLLU_TAG_COLUMNS:
        raise UserError(
            f"{path}: data.source.tags_column={tags_column!r} is not a CoNLL-U tag column; use upos or xpos"
        )
    column = CONLLU_TAG_COLUMNS[column_name]
    words: list[str] = []
    tags: list[str] = []
    start: int | None = None  # first line of the current sentence (comments included)
    last = 0  # the last word ID of the current sentence (a range's end once its words are read)
    for number, raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            if start is not None:
                if not words:
                    raise UserError(
                        f"{path} line {start}: sentence has no tokens (no line whose "
                        "ID is an integer); add its token lines or remove it"
                    )
                yield tagged_record(words, tags, f"{path}:{start}")
            words, tags, start, last = [], [], None, 0
            continue
        if start is None:
            start = number
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != CONLLU_COLUMNS:
            raise UserError(
                f"{path} line {number}: {len(fields)} tab-separated columns, CoNLL-U "
                f"has {CONLLU_COLUMNS} (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS "
                "MISC); fix the line (spaces instead of tabs?)"
            )
        token_id = fields[0]
        if "-" in token_id or "." in token_id:
            # A multiword range (its words follow as lines of their own) or an empty node.
            parts = token_id.replace("-", ".").split(".")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                first = int(parts[0])
                # A range starts at the next word; an empty node n.k follows word n (0.k: first).
                expected = last + 1 if "-" in token_id else last
                if first != expected:
                    raise UserError(_out_of_sequence(path, number, token_id, last, start))
                continue
            raise UserError(
                f"{path} line {number}: ID {token_id!r} is neither an integer, a "
                "range like 3-4 nor an empty node like 5.1; fix the ID column"
            )
        if not token_id.isdigit():
            raise UserError(
                f"{path} line {number}: ID {token_id!r} is not an integer; CoNLL-U "
                "token lines start with the word's index (1, 2, ...)"
            )
        if int(token_id) != last + 1:
            raise UserError(_out_of_sequence(path, number, token_id, last, start))
        last = int(token_id)
        tag = fields[column]
        if tag in ("", "_"):
            raise UserError(
                f"{path} line {number}: the {column_name.upper()} column is "
                f"{tag or 'empty'!r} (unannotated); tag the word or choose the "
                "other column with data.source.tags_column"
            )
        words.append(fields[1])
        tags.append(tag)
    if start is not None:
        if not words:
            raise UserError(
                f"{path} line {start}: sentence has no tokens (no line whose ID is an "
                "integer); add its token lines or remove it"
            )
        yield tagged_record(words, tags, f"{path}:{start}")


def _out_of_sequence(path: Path, number: int, token_id: str, last: int, start: int | None) -> str:
    """The one line for a CoNLL-U ID that does not follow the previous word's."""
    if token_id.split("-")[0].split(".")[0] == "1" and last > 0:
        return (
            f"{path} line {number}: ID {token_id} starts a new sentence inside the one from "
            f"line {start} (after word {last}); a blank line is missing before it"
        )
    return (
        f"{path} line {number}: ID {token_id} does not follow word {last} (IDs run 1, 2, 3 in "
        f"each sentence, from line {start}); a token line is missing, repeated or out of order"
    )


def read_conll(
    path: Path, lines: Iterator[tuple[int, str]], tags_column: str | None = None
) -> Iterator[dict]:
    """Sentences of a CoNLL-2003-style file (see the module docstring)."""
    index: int | None = None
    if tags_column is not None:
        text = str(tags_column).strip()
        if not text.lstrip("-").isdigit():
            raise UserError(
                f"{path}: data.source.tags_column={tags_column!r} must be a column "
                "number for CoNLL files (0 = the word, -1 = the last column)"
            )
        index = int(text)
    words: list[str] = []
    tags: list[str] = []
    start: int | None = None
    # The columns of the file's first token line: a line with fewer lacks one (the tag), and
    # reading its last column would take another column's value (a chunk tag) as the tag.
    width: tuple[int, int] | None = None  # (columns, line)
    for number, raw in lines:
        fields = raw.split()
        if not fields:
            if words:
                yield tagged_record(words, tags, f"{path}:{start}")
            words, tags, start = [], [], None
            continue
        if fields[0] == "-DOCSTART-":
            continue
        column = len(fields) - 1 if index is None else index
        if len(fields) < 2 or not -len(fields) <= column < len(fields) or column in (0, -len(fields)):
            wanted = "a word and a tag" if index is None else f"a tag in column {index}"
            raise UserError(
                f"{path} line {number}: {len(fields)} column(s), expected {wanted}; "
                "fix the line or set data.source.tags_column"
            )
        if width is None:
            width = (len(fields), number)
        elif len(fields) != width[0]:
            what = "lacks a column (the tag?)" if len(fields) < width[0] else "has an extra column"
            raise UserError(
                f"{path} line {number}: {len(fields)} columns where line {width[1]} has "
                f"{width[0]}; the line {what}; give every token line the same columns"
            )
        if start is None:
            start = number
        words.append(fields[0])
        tags.append(fields[column])
    if words:
        yield tagged_record(words, tags, f"{path}:{start}")


def tagged_row(row: Any, where: str, source: str, words_column: str, tags_column: str) -> dict:
    """One row of a table (JSONL object, parquet or hub row) holding a list of words and a list
    of tags of the same length."""
    values = []
    for column in (words_column, tags_column):
        value = row[column]
        if hasattr(value, "tolist"):  # numpy arrays from parquet/pandas
            value = value.tolist()
        if not isinstance(value, list):
            raise UserError(
                f"{where}: {column!r} must be a list, got {type(value).__name__}; point "
                "data.source.words_column/tags_column at list columns"
            )
        check_items(value, column, where, tags=column == tags_column)
        values.append([str(v) for v in value])
    words, tags = values
    if len(words) != len(tags):
        raise UserError(
            f"{where}: {words_column!r} has {len(words)} words but {tags_column!r} "
            f"has {len(tags)} tags; give one tag per word"
        )
    return tagged_record(words, tags, source)


def check_items(values: list, column: str, where: str, *, tags: bool) -> None:
    """Each item a string or an integer (tag ids); a tag list is one or the other, never empty
    or null: a null or ``""`` tag would become a class of its own, and mixing ``3`` with
    ``"B-PER"`` two names for what may be one class."""
    for i, v in enumerate(values):
        if v is None:
            raise UserError(f"{where}: {column!r} item {i} is null; give every word a {_kind(tags)}")
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise UserError(
                f"{where}: {column!r} item {i} is {type(v).__name__} {v!r}; items must be "
                f"strings{' or integer tag ids' if tags else ''}"
            )
        if tags and isinstance(v, str) and not v.strip():
            raise UserError(f"{where}: {column!r} item {i} is an empty tag {v!r}; give every word a tag")
    if tags and values:
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            first_int = next(i for i, v in enumerate(values) if isinstance(v, int))
            first_str = next(i for i, v in enumerate(values) if isinstance(v, str))
            raise UserError(
                f"{where}: {column!r} mixes integer and string tags (item {first_int} is "
                f"{values[first_int]!r}, item {first_str} {values[first_str]!r}); use tag names "
                "or tag ids, not both"
            )


def _kind(tags: bool) -> str:
    return "tag" if tags else "word"


def read_tagged_jsonl(
    path: Path, lines: Iterator[tuple[int, str]], words_column: str, tags_column: str
) -> Iterator[dict]:
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); fix the line") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
        missing = [c for c in (words_column, tags_column) if c not in row]
        if missing:
            raise UserError(
                f"{where}: no key {missing[0]!r}; available: "
                f"{', '.join(map(repr, row)) or '(none)'}; set "
                "data.source.words_column/tags_column"
            )
        yield tagged_row(row, where, f"{path}:{number}", words_column, tags_column)


def read_tagged_parquet(path: Path, words_column: str, tags_column: str) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable parquet file ({e}); re-export it") from None
    names = file.schema_arrow.names
    missing = [c for c in (words_column, tags_column) if c not in names]
    if missing:
        raise UserError(
            f"{path}: schema has no column {missing[0]!r}; available: "
            f"{', '.join(map(repr, names))}; set data.source.words_column/tags_column"
        )
    row_number = 0
    for batch in file.iter_batches(batch_size=4096, columns=[words_column, tags_column]):
        columns = {c: batch.column(c).to_pylist() for c in (words_column, tags_column)}
        for i in range(batch.num_rows):
            row_number += 1
            row = {c: values[i] for c, values in columns.items()}
            yield tagged_row(
                row, f"{path} row {row_number}", f"{path}:{row_number}", words_column, tags_column
            )
