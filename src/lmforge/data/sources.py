"""Raw-data sources for the ``collect`` stage: the stdlib corpus, local files, HF datasets, URLs.

Each source streams records ``{"text": str, "label": str | int | None, "source": str}``, plus
``"target": str`` for text-to-text data;
:func:`iter_records` picks one by ``kind``. The pieces live in :mod:`~lmforge.data.readers`
(file formats), :mod:`~lmforge.data.stdlib` and :mod:`~lmforge.data.download`; this module
adds Hugging Face datasets and the dispatcher, and is the one to import from.
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError
from lmforge.data.download import read_url
from lmforge.data.readers import (
    Record,
    _check_columns,
    _check_label,
    _missing_target,
    _target_value,
    _text_value,
    normalize_labels,
    read_local,
)
from lmforge.data.stdlib import StdlibScan, read_stdlib, stdlib_module_counts

__all__ = [
    "StdlibScan",
    "hf_label_names",
    "iter_records",
    "iter_url",
    "normalize_labels",
    "read_hf",
    "read_local",
    "read_stdlib",
    "read_url",
    "stdlib_module_counts",
]


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets

# Local files go through the same load_dataset call as hub datasets, via the packaged builders.
_HF_BUILDERS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".txt": "text",
}
_HF_BATCH_ROWS = 1000


def _hf_local_args(path: Path, split: str) -> tuple[str, dict[str, Any]]:
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in _HF_BUILDERS
            and not any(s.startswith(".") for s in p.relative_to(path).parts)
        )
    builders = {_HF_BUILDERS.get(p.suffix.lower(), p.suffix or "(none)") for p in files}
    if len(builders) != 1 or not builders <= set(_HF_BUILDERS.values()):
        found = ", ".join(sorted(builders)) or "none"
        raise UserError(
            f"{path}: need files of one format ({', '.join(sorted(_HF_BUILDERS))}), found "
            f"{found}; keep one format per folder or point name at such a file"
        )
    builder = builders.pop()
    kwargs: dict[str, Any] = {"data_files": {split: [str(p) for p in files]}}
    if all(p.suffix.lower() == ".tsv" for p in files):
        # Same reason as the local TSV reader: SST-2-style text holds bare quotes.
        kwargs.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    return builder, kwargs


def _hf_load(
    name: str,
    split: str,
    data_dir: str | None,
    data_files: Any,
    cache_dir: str | None,
    streaming: bool,
) -> Any:
    import datasets

    local = Path(name).expanduser()
    looks_local = name.startswith(("/", ".", "~")) or local.suffix.lower() in _HF_BUILDERS
    if looks_local and not local.exists():
        # Otherwise a mistyped local path turns into a confusing hub lookup.
        raise UserError(f"{name}: no such file or folder; check the path (hub ids look like org/name)")
    if local.exists():
        if data_dir is not None or data_files is not None:
            raise UserError(
                f"{name}: data_dir/data_files only apply to hub datasets; put the local file "
                "or folder path in name instead"
            )
        path, kwargs = _hf_local_args(local, split)
    else:
        path, kwargs = name, {"data_dir": data_dir, "data_files": data_files}
    try:
        return datasets.load_dataset(path, split=split, cache_dir=cache_dir, streaming=streaming, **kwargs)
    except (datasets.exceptions.DatasetsError, FileNotFoundError, ConnectionError, ValueError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(
            f"hf dataset {name!r} split {split!r}: cannot load ({first_line}); check name, "
            "split and network access (or use a local path)"
        ) from None


def read_hf(
    name: str,
    *,
    split: str,
    text_columns: Sequence[str] = ("text",),
    label_column: str | None = "label",
    data_dir: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
    text_separator: str = " . ",
    target_column: str | None = None,
    words_column: str = "words",
    tags_column: str | None = None,
) -> Iterator[Record]:
    """Stream a Hugging Face dataset split via ``datasets.load_dataset`` and its cache.

    ``name`` is a hub id or a local parquet/csv/tsv/json(l)/txt file or folder of one format.
    Remote code is never run. ClassLabel labels stay ints (see :func:`hf_label_names`); the
    source is ``"name[split]:row"`` with a 1-based row. ``target_column`` adds each row's
    ``target`` text (text-to-text data). ``tags_column`` reads word-tagged rows instead: a list
    of words (``words_column``) and a list of tags per row (:mod:`lmforge.data.tagged_readers`).
    """
    if tags_column is not None:
        yield from _read_hf_tagged(
            name, split, data_dir, data_files, cache_dir, streaming, words_column, tags_column
        )
        return
    columns = _check_columns(text_columns, label_column, target_column)
    ds = _hf_load(name, split, data_dir, data_files, cache_dir, streaming)
    wanted = columns + ([label_column] if label_column is not None else [])
    row = 0
    for batch in ds.iter(batch_size=_HF_BATCH_ROWS):
        if row == 0:
            # Checked on the first batch: a streamed dataset may not know its columns up front.
            _missing_target(f"hf dataset {name!r} split {split!r}", target_column, list(batch))
            missing = [c for c in wanted if c not in batch]
            if missing:
                raise UserError(
                    f"hf dataset {name!r} split {split!r}: no column {missing[0]!r}; available: "
                    f"{', '.join(repr(c) for c in batch)}; set text_columns/label_column"
                )
        for i in range(len(batch[wanted[0]])):
            row += 1
            where = f"hf dataset {name!r} split {split!r} row {row}"
            parts = [_text_value(batch[c][i], where, c) for c in columns]
            text = text_separator.join(p for p in parts if p is not None and p.strip())
            label = None
            if label_column is not None:
                label = _check_label(batch[label_column][i], where, label_column)
            record = {"text": text, "label": label, "source": f"{name}[{split}]:{row}"}
            if target_column is not None:
                record["target"] = _target_value(batch[target_column][i], where, target_column)
            yield record


def _read_hf_tagged(
    name: str,
    split: str,
    data_dir: str | None,
    data_files: Any,
    cache_dir: str | None,
    streaming: bool,
    words_column: str,
    tags_column: str,
) -> Iterator[Record]:
    from lmforge.data.tagged_readers import tagged_row

    ds = _hf_load(name, split, data_dir, data_files, cache_dir, streaming)
    feature = (getattr(ds, "features", None) or {}).get(tags_column)
    # NER datasets on the hub store tags as a Sequence of ClassLabel: ints with names.
    names = getattr(getattr(feature, "feature", None), "names", None)
    row = 0
    for batch in ds.iter(batch_size=_HF_BATCH_ROWS):
        missing = [c for c in (words_column, tags_column) if c not in batch]
        if missing:
            raise UserError(
                f"hf dataset {name!r} split {split!r}: no column {missing[0]!r}; "
                f"available: {', '.join(repr(c) for c in batch)}; set "
                "data.source.words_column/tags_column"
            )
        for i in range(len(batch[words_column])):
            row += 1
            tags = batch[tags_column][i]
            if names is not None:
                tags = [names[t] for t in tags]
            yield tagged_row(
                {words_column: batch[words_column][i], tags_column: tags},
                f"hf dataset {name!r} split {split!r} row {row}",
                f"{name}[{split}]:{row}",
                words_column,
                tags_column,
            )


def hf_label_names(
    name: str,
    *,
    split: str,
    label_column: str = "label",
    data_dir: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
) -> list[str] | None:
    """Class names of a ClassLabel column (index = int label), or None for any other column."""
    import datasets

    ds = _hf_load(name, split, data_dir, data_files, cache_dir, streaming=False)
    feature = (ds.features or {}).get(label_column)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


# ---------------------------------------------------------------------------------------------
# URLs (download once, then read as a local file)
def iter_url(
    url: str,
    *,
    cache_dir: str | Path,
    sha256: str | None = None,
    filename: str | None = None,
    text_columns: Sequence[str] = ("text",),
    label_column: str | None = "label",
    format: str | None = None,
    text_separator: str = " . ",
    encoding: str = "utf-8",
    timeout: float = 30.0,
    progress: bool = True,
    target_column: str | None = None,
    words_column: str = "words",
    tags_column: str | None = None,
) -> Iterator[Record]:
    """Download ``url`` (see :func:`read_url`) and stream its records with :func:`read_local`."""
    path = read_url(
        url,
        cache_dir=cache_dir,
        sha256=sha256,
        filename=filename,
        timeout=timeout,
        progress=progress,
    )
    yield from read_local(
        path,
        text_columns=text_columns,
        label_column=label_column,
        format=format,
        text_separator=text_separator,
        encoding=encoding,
        target_column=target_column,
        words_column=words_column,
        tags_column=tags_column,
    )


# ---------------------------------------------------------------------------------------------
# Dispatcher

_KINDS: dict[str, Callable[..., Iterator[Record]]] = {
    "hf": read_hf,
    "local": read_local,
    "stdlib": read_stdlib,
    "url": iter_url,
}


def iter_records(kind: str, **options: Any) -> Iterator[Record]:
    """Stream records from the source ``kind`` (``stdlib``, ``local``, ``hf`` or ``url``).

    ``options`` are the keyword arguments of the matching reader (``path``, ``text_columns``,
    ``label_column``, ``format``, ``top_k``, ``name``, ``split``, ``url``, ``sha256``,
    ``cache_dir``...). Options set to None that the kind does not take are ignored, so one config
    schema with null defaults can serve every kind; any other unknown option is an error.
    """
    reader = _KINDS.get(kind)
    if reader is None:
        raise UserError(f"source kind {kind!r} is unknown; use one of: {', '.join(_KINDS)}")
    params = inspect.signature(reader).parameters
    unknown = sorted(k for k, v in options.items() if k not in params and v is not None)
    if unknown:
        raise UserError(
            f"source kind {kind!r} has no option {unknown[0]!r}; valid options: {', '.join(params)}"
        )
    # None means "the default" unless the option itself accepts None (label_column=None reads
    # unlabelled text, top_k=None labels every module).
    kwargs = {
        k: v
        for k, v in options.items()
        if k in params and (v is not None or "None" in str(params[k].annotation))
    }
    for name, param in params.items():
        if param.default is inspect.Parameter.empty and kwargs.get(name) is None:
            raise UserError(f"source kind {kind!r} needs option {name!r}; set it in the config")
    if "text_columns" in kwargs and kwargs["text_columns"] is not None:
        # Hydra hands over ListConfig; plain strings keep messages and comparisons simple.
        tc = kwargs["text_columns"]
        kwargs["text_columns"] = [tc] if isinstance(tc, str) else [str(c) for c in tc]
    return reader(**kwargs)
