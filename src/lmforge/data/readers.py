"""Streaming readers for local text files: txt, csv, tsv, jsonl and parquet.

Every reader yields records ``{"text": str, "label": str | int | None, "source": str}`` one at a
time, so memory stays flat however large the corpus is. Text-to-text data (``target_column``, or
line-aligned parallel files) adds ``"target": str`` and carries no label. ``source`` is ``"<file>:<n>"``: the
1-based line number where the record starts for line-based formats, the 1-based row for parquet.

User mistakes (missing file, bad encoding, malformed row, unknown column...) raise a one-line
:class:`~lmforge.core.errors.UserError` naming the file, the line/row or column, and the fix.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError

Record = dict[str, Any]

# Extension -> format. ".json" is deliberately absent: it may hold one JSON array rather than
# JSON Lines, and guessing wrong gives confusing errors; format="jsonl" opts in explicitly.
EXTENSIONS: dict[str, str] = {
    ".txt": "txt",
    ".text": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".conllu": "conllu",
    ".conll": "conll",
}
FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet", "tsv", "txt", "conll", "conllu")
# Word-tagged formats (lmforge.data.tagged_readers): one record per sentence, words and tags.
TAGGED_FORMATS: tuple[str, ...] = ("conll", "conllu")

_INT_RE = re.compile(r"[+-]?[0-9]+")
_PARQUET_BATCH_ROWS = 4096

# The csv module rejects fields over 128 KiB by default, yet one document per row (a whole
# article in a "text" column) is normal here; 1 GiB stays below the C long limit everywhere.
csv.field_size_limit(1 << 30)


def normalize_labels(labels: Iterable[str | int | None]) -> list[str | int | None]:
    """Return the labels as ints when every non-None label is an integer (``"3"``, ``-1``).

    CSV/TSV readers always yield labels as strings because a stream cannot know whether a later
    row holds ``"positive"``; call this once the labels of a column are collected. Otherwise the
    labels are returned unchanged. ``None`` (unlabelled text) passes through.
    """
    values = list(labels)
    present = [v for v in values if v is not None]
    if not present:
        return values
    # A regex rather than int(): int() also accepts "1_000" and non-ASCII digits like "٣".
    if all(isinstance(v, int) or _INT_RE.fullmatch(v.strip()) for v in present):
        return [None if v is None else int(v) for v in values]
    return values


def read_local(
    path: str | Path,
    *,
    text_columns: Sequence[str] = ("text",),
    label_column: str | None = "label",
    format: str | None = None,
    text_separator: str = " . ",
    encoding: str = "utf-8",
    target_column: str | None = None,
    parallel: Sequence[str] | None = None,
    words_column: str = "words",
    tags_column: str | None = None,
) -> Iterator[Record]:
    """Stream records from a file, or from every supported file under a folder (sorted).

    The format comes from the extension (``.txt .csv .tsv .jsonl .parquet``) unless ``format``
    is given. ``text_columns`` are joined with ``text_separator``, skipping empty parts; rows
    whose text is empty are still yielded, with ``text == ""``, so the cleaner can count them.
    ``label_column=None`` reads unlabelled text; txt files never carry labels. CSV/TSV labels
    are strings (see :func:`normalize_labels`); JSONL/parquet labels keep their int/str type.

    ``target_column`` names the column of a text-to-text pair's target (records get ``target``;
    give ``label_column=None``). ``parallel=[src, tgt]`` reads line-aligned files instead:
    ``path`` is their stem, see :func:`read_parallel`.

    Word-tagged data (:mod:`lmforge.data.tagged_readers`): ``.conllu``/``.conll`` files (or
    ``format`` conllu/conll) always, and jsonl/parquet when ``tags_column`` is given, yield
    sentence records with ``words`` and ``tags``.
    """
    if parallel is not None:
        yield from read_parallel(path, parallel, encoding=encoding)
        return
    columns = _check_columns(text_columns, label_column, target_column)
    if format is not None and format not in FORMATS:
        raise UserError(f"format {format!r} is not supported; use one of: {', '.join(FORMATS)}")
    if target_column is not None and format == "txt":
        raise UserError(
            f"{path}: txt files hold text only; use csv/tsv/jsonl/parquet for a "
            "target column, or data.source.parallel for line-aligned files"
        )
    for file, fmt in _resolve_files(Path(path), format):
        if target_column is not None and fmt == "txt":
            raise UserError(
                f"{file}: txt files hold text only; use csv/tsv/jsonl/parquet for "
                "a target column, or data.source.parallel for line-aligned files"
            )
        if fmt in TAGGED_FORMATS or (tags_column is not None and fmt in ("jsonl", "parquet")):
            yield from _read_tagged_file(file, fmt, encoding, words_column, tags_column)
            continue
        yield from _read_file(file, fmt, columns, label_column, text_separator, encoding, target_column)


def _read_tagged_file(
    path: Path, fmt: str, encoding: str, words_column: str, tags_column: str | None
) -> Iterator[Record]:
    from lmforge.data import tagged_readers as tagged

    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty; remove it or fill it")
    if fmt == "conllu":
        records = tagged.read_conllu(path, _lines(path, encoding), tags_column)
    elif fmt == "conll":
        records = tagged.read_conll(path, _lines(path, encoding), tags_column)
    elif fmt == "jsonl":
        records = tagged.read_tagged_jsonl(path, _lines(path, encoding), words_column, str(tags_column))
    else:
        records = tagged.read_tagged_parquet(path, words_column, str(tags_column))
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        raise UserError(f"{path}: file holds no sentences; remove it or fill it")


def _count_lines(path: Path) -> int:
    """Lines of a file, a last line without a newline included; reads 1 MiB at a time."""
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def read_parallel(path: str | Path, suffixes: Sequence[str], *, encoding: str = "utf-8") -> Iterator[Record]:
    """Stream line-aligned parallel files ``{path}.{src}`` and ``{path}.{tgt}`` as pairs.

    Line ``i`` of the source file is the text of record ``i``, line ``i`` of the target file its
    target; the source is ``"<source file>:<line>"``. Both files are counted before anything is
    read, so files of different lengths fail up front naming both counts. Empty lines are
    yielded as empty strings, for the cleaner to count.
    """
    if isinstance(suffixes, str) or len(suffixes) != 2:
        raise UserError(f"parallel={suffixes!r}: give two file suffixes [source, target], e.g. [de, en]")
    stem = Path(path)
    files = [stem.parent / f"{stem.name}.{str(s).lstrip('.')}" for s in suffixes]
    for file in files:
        if not file.is_file():
            raise UserError(
                f"{file}: no such file; parallel files are <path>.<suffix> "
                f"({files[0].name} + {files[1].name}); check data.source.path "
                "(the file stem, e.g. DIR/train) and data.source.parallel"
            )
    counts = [_count_lines(file) for file in files]
    if counts[0] != counts[1]:
        raise UserError(
            f"{files[0]} has {counts[0]} lines but {files[1]} has {counts[1]}; "
            "parallel files must be line-aligned (line i of one translates line i "
            "of the other): fix or trim them to the same lines"
        )
    if counts[0] == 0:
        raise UserError(f"{files[0]}: file is empty; remove it or fill it")
    for (number, text), (_, target) in zip(
        _lines(files[0], encoding), _lines(files[1], encoding), strict=True
    ):
        yield {
            "text": text.rstrip("\r\n"),
            "target": target.rstrip("\r\n"),
            "label": None,
            "source": f"{files[0]}:{number}",
        }


def _check_columns(
    text_columns: Sequence[str] | str, label_column: str | None, target_column: str | None = None
) -> list[str]:
    # A bare string is a Sequence too; iterating "text" would look for columns t, e, x, t.
    columns = [text_columns] if isinstance(text_columns, str) else [str(c) for c in text_columns]
    if not columns:
        raise UserError("text_columns is empty; name at least one column holding the text")
    if label_column is not None and label_column in columns:
        raise UserError(
            f"column {label_column!r} is both a text column and the label column; "
            "set text_columns and label_column to different columns"
        )
    if target_column is not None and (target_column in columns or target_column == label_column):
        raise UserError(
            f"column {target_column!r} is the target column and a text/label column too; "
            "set target_column to the column holding the target text only"
        )
    return columns


def _missing_target(where: str, target_column: str | None, available: Sequence[str]) -> None:
    if target_column is not None and target_column not in available:
        raise UserError(
            f"{where}: no target column {target_column!r}; available: "
            f"{', '.join(repr(c) for c in available) or '(none)'}; set "
            "data.source.target_column to the column holding the target text"
        )


def _target_value(value: Any, where: str, target_column: str) -> str:
    """A target as text: None becomes "" (counted as empty_target by the cleaner)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise UserError(
        f"{where}: target {target_column!r} is {type(value).__name__} {value!r}, not a string; "
        "targets must be text (quote the value, or fix data.source.target_column)"
    )


def _resolve_files(path: Path, format: str | None) -> list[tuple[Path, str]]:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; check the path")
    if path.is_file():
        return [(path, format or _format_of(path))]
    files = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        # Hidden files (.DS_Store, .gitignore, editor swap files) are never data.
        if any(part.startswith(".") for part in file.relative_to(path).parts):
            continue
        fmt = EXTENSIONS.get(file.suffix.lower())
        if fmt is not None and (format is None or fmt == format):
            files.append((file, fmt))
    if not files:
        wanted = format or "supported"
        raise UserError(
            f"{path}: folder holds no {wanted} files ({', '.join(sorted(EXTENSIONS))}); "
            "put data files in it or point path at a file"
        )
    return files


def _format_of(path: Path) -> str:
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: unsupported extension {path.suffix or '(none)'!r}; use one of "
            f"{', '.join(sorted(EXTENSIONS))} or set format to one of: {', '.join(FORMATS)}"
        )
    return fmt


def _read_file(
    path: Path,
    fmt: str,
    columns: list[str],
    label_column: str | None,
    separator: str,
    encoding: str,
    target_column: str | None = None,
) -> Iterator[Record]:
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty; remove it or fill it")
    if fmt == "parquet":
        records = _read_parquet(path, columns, label_column, separator, target_column)
    elif fmt == "txt":
        records = _read_txt(path, encoding)
    elif fmt == "jsonl":
        records = _read_jsonl(path, columns, label_column, separator, encoding, target_column)
    else:
        records = _read_delimited(path, fmt, columns, label_column, separator, encoding, target_column)
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        raise UserError(f"{path}: file holds no records; remove it or fill it")


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` decoded one line at a time, keeping line endings.

    Decoding per line (not per 8 KiB chunk as text-mode files do) lets a bad byte be reported
    with its exact line number.
    """
    try:
        ascii_compatible = "\n".encode(encoding) == b"\n" and "a".encode(encoding) == b"a"
    except LookupError:
        raise UserError(f"{path}: unknown encoding {encoding!r}; use e.g. 'utf-8'") from None
    if not ascii_compatible:
        raise UserError(
            f"{path}: encoding {encoding!r} is not supported; re-encode the file as UTF-8 "
            f"(e.g. iconv -f {encoding} -t utf-8)"
        )
    strip_bom = codecs.lookup(encoding).name == "utf-8"
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path} line {number}: bytes are not valid {encoding} "
                    f"(byte {e.start + 1} of the line); re-encode the file as {encoding} "
                    "or set data.source.encoding (e.g. latin-1)"
                ) from None
            if number == 1 and strip_bom:
                # Spreadsheet exports often start with a BOM, which would glue itself to the
                # first header name and make the column look missing.
                line = line.removeprefix("\ufeff")
            yield number, line


def _read_txt(path: Path, encoding: str) -> Iterator[Record]:
    for number, line in _lines(path, encoding):
        text = line.rstrip("\r\n")
        if text.strip():
            yield {"text": text, "label": None, "source": f"{path}:{number}"}


def _join(values: Iterable[Any], separator: str) -> str:
    return separator.join(v for v in values if v is not None and v.strip())


def _missing_columns(where: str, wanted: list[str], available: Sequence[str], what: str) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise UserError(
            f"{where}: {what} has no column {missing[0]!r}; available: "
            f"{', '.join(repr(c) for c in available) or '(none)'}; "
            "set text_columns/label_column to existing columns (label_column=None if unlabelled)"
        )


def _read_delimited(
    path: Path,
    fmt: str,
    columns: list[str],
    label_column: str | None,
    separator: str,
    encoding: str,
    target_column: str | None = None,
) -> Iterator[Record]:
    current = [0]  # line number of the last line handed to the csv reader

    def lines() -> Iterator[str]:
        for number, line in _lines(path, encoding):
            current[0] = number
            yield line

    # TSV (SST-2, GLUE) stores text with bare quotes such as 'the "best" film'; with quoting
    # on, the csv module would swallow them and merge fields.
    options: dict = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(lines(), **options)
    try:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: file has no header row; add one naming the columns")
        wanted = columns + ([label_column] if label_column is not None else [])
        _missing_target(str(path), target_column, header)
        _missing_columns(str(path), wanted, header, "header")
        text_idx = [header.index(c) for c in columns]
        target_idx = header.index(target_column) if target_column is not None else None
        label_idx = header.index(label_column) if label_column is not None else None
        start = current[0] + 1
        for row in reader:
            if not row:
                start = current[0] + 1
                continue
            where = f"{path} line {start}"
            if len(row) != len(header):
                hint = "check the delimiter" if fmt == "tsv" else "quote fields holding commas"
                raise UserError(
                    f"{where}: expected {len(header)} fields ({', '.join(header)}) but found "
                    f"{len(row)}; {hint} or fix the row"
                )
            label: str | None = None
            if label_idx is not None:
                label = row[label_idx].strip()
                if not label:
                    raise UserError(f"{where}: column {label_column!r} is empty; fill it or drop the row")
            text = _join((row[i] for i in text_idx), separator)
            record = {"text": text, "label": label, "source": f"{path}:{start}"}
            if target_idx is not None:
                record["target"] = row[target_idx]
            yield record
            start = current[0] + 1
    except csv.Error as e:
        raise UserError(f"{path} line {current[0]}: malformed {fmt.upper()} ({e}); fix the row") from None


def _check_label(value: Any, where: str, label_column: str) -> str | int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{where}: {label_column!r} is empty; fill it or drop the row")
    if isinstance(value, bool):
        # Records carry int|str labels; true/false classes become 1/0 rather than a third type.
        return int(value)
    if isinstance(value, (int, str)):
        return value
    raise UserError(
        f"{where}: {label_column!r} is {type(value).__name__} {value!r}; labels must be integers or strings"
    )


def _text_value(value: Any, where: str, column: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UserError(
        f"{where}: {column!r} is {type(value).__name__}, not a string; point text_columns at text columns"
    )


class _LabelTypes:
    """Rejects a label column that mixes ints and strings, naming where each type appeared."""

    def __init__(self, label_column: str) -> None:
        self.label_column = label_column
        self.first: tuple[type, str, Any] | None = None

    def check(self, label: str | int, where: str) -> None:
        if self.first is None:
            self.first = (type(label), where, label)
        elif type(label) is not self.first[0]:
            kind, first_where, first_value = self.first
            raise UserError(
                f"{where}: {self.label_column!r} is {label!r} but {first_where} has "
                f"{first_value!r}; use only integers or only strings for labels"
            )


def _read_jsonl(
    path: Path,
    columns: list[str],
    label_column: str | None,
    separator: str,
    encoding: str,
    target_column: str | None = None,
) -> Iterator[Record]:
    types = _LabelTypes(label_column) if label_column is not None else None
    wanted = columns + ([label_column] if label_column is not None else [])
    for number, line in _lines(path, encoding):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: invalid JSON ({e.msg} at column {e.colno}); fix the line") from None
        if not isinstance(row, dict):
            raise UserError(
                f"{where}: expected a JSON object per line, got {type(row).__name__}; "
                'write one {"text": ..., "label": ...} object per line'
            )
        _missing_target(where, target_column, list(row))
        _missing_columns(where, wanted, list(row), "object")
        text = _join((_text_value(row[c], where, c) for c in columns), separator)
        label = None
        if label_column is not None and types is not None:
            label = _check_label(row[label_column], where, label_column)
            types.check(label, where)
        record = {"text": text, "label": label, "source": f"{path}:{number}"}
        if target_column is not None:
            record["target"] = _target_value(row[target_column], where, target_column)
        yield record


def _read_parquet(
    path: Path,
    columns: list[str],
    label_column: str | None,
    separator: str,
    target_column: str | None = None,
) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable parquet file ({e}); re-export it") from None
    _missing_target(str(path), target_column, file.schema_arrow.names)
    wanted = columns + ([label_column] if label_column is not None else [])
    _missing_columns(str(path), wanted, file.schema_arrow.names, "schema")
    if label_column is not None:
        label_type = file.schema_arrow.field(label_column).type
        if pa.types.is_floating(label_type):
            raise UserError(
                f"{path}: column {label_column!r} is {label_type}; labels must be integers or "
                "strings (cast the column, e.g. to int64)"
            )
    types = _LabelTypes(label_column) if label_column is not None else None
    row_number = 0
    # Row groups are read batch by batch and only the needed columns are decoded, so a
    # multi-GB file never sits in memory whole.
    read_columns = wanted + ([target_column] if target_column is not None else [])
    batches = file.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=read_columns)
    while True:
        # A file whose footer is intact but whose pages are damaged fails only here, mid-read.
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise UserError(
                f"{path} row {row_number + 1}: parquet data is corrupt "
                f"({str(e).splitlines()[0][:200]}); re-export the file"
            ) from None
        if batch is None:
            break
        texts = [batch.column(c).to_pylist() for c in columns]
        labels = batch.column(label_column).to_pylist() if label_column is not None else None
        targets = batch.column(target_column).to_pylist() if target_column is not None else None
        for i in range(batch.num_rows):
            row_number += 1
            where = f"{path} row {row_number}"
            parts = (_text_value(col[i], where, c) for col, c in zip(texts, columns, strict=True))
            text = _join(parts, separator)
            label = None
            if labels is not None and label_column is not None and types is not None:
                label = _check_label(labels[i], where, label_column)
                types.check(label, where)
            record = {"text": text, "label": label, "source": f"{path}:{row_number}"}
            if targets is not None and target_column is not None:
                record["target"] = _target_value(targets[i], where, target_column)
            yield record
