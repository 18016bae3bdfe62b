"""The built-in offline corpus: docstrings of the Python standard library, read with ``ast``.

Files are parsed, never imported, so the scan has no side effects and works for any stdlib
folder (another Python version, a fake one in tests).
"""

from __future__ import annotations

import ast
import json
import os
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.core.errors import UserError
from lmforge.data.readers import Record

# Test suites are full of throwaway docstrings ("Test that foo works") and deliberately broken
# files; installed third-party packages are not the stdlib.
_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_NESTED_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


@dataclass
class StdlibScan:
    """What a stdlib scan saw; pass one to :func:`read_stdlib` to get the figures back."""

    files: int = 0
    unparsable: list[str] = field(default_factory=list)
    records: int = 0
    module_counts: dict[str, int] = field(default_factory=dict)


def _stdlib_root(stdlib_dir: str | Path | None) -> Path:
    root = Path(stdlib_dir if stdlib_dir is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise UserError(f"{root}: stdlib_dir is not a folder; point it at e.g. lib/python3.11")
    return root


def _stdlib_files(root: Path) -> list[tuple[str, Path]]:
    """``(dotted module name, path)`` of every non-test stdlib source file, sorted by path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Folders that are not identifiers (lib-dynload, config-3.11-x86_64-linux-gnu) are not
        # importable packages, so their files are not stdlib modules.
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS and d.isidentifier()]
        for name in filenames:
            stem = name[:-3]
            if not name.endswith(".py") or name.startswith("test_") or not stem.isidentifier():
                continue
            path = Path(dirpath, name)
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                found.append((path.relative_to(root).as_posix(), ".".join(parts), path))
    found.sort()
    return [(module, path) for _, module, path in found]


def _walk_defs(body: list[ast.AST], prefix: str) -> Iterator[tuple[str, ast.AST]]:
    # Depth-first through statement bodies only (not expressions), in source order, so defs
    # under `if`/`try` at module level are found without visiting every AST node.
    for node in body:
        if isinstance(node, _DEFS):
            qualname = prefix + node.name
            yield qualname, node
            yield from _walk_defs(node.body, qualname + ".")
        else:
            for name in _NESTED_BODIES:
                nested = getattr(node, name, None)
                if isinstance(nested, list):
                    yield from _walk_defs(nested, prefix)


def _scan_stdlib(root: Path, min_chars: int, scan: StdlibScan) -> Iterator[tuple[str, str, str]]:
    """Yield ``(top-level module, source, docstring)`` and fill ``scan`` along the way."""
    for module, path in _stdlib_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, OSError):
            scan.unparsable.append(path.relative_to(root).as_posix())
            continue
        scan.files += 1
        top = module.split(".", 1)[0]
        for source, doc in module_docstrings(tree, module):
            if len(doc) >= min_chars:
                scan.records += 1
                scan.module_counts[top] = scan.module_counts.get(top, 0) + 1
                yield top, source, doc


def module_docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """``(source, docstring)`` of a parsed module and of its classes, functions and methods, in
    source order; the source is ``module`` or ``"module:Qual.name"``."""
    found = [(module, tree)] + [(f"{module}:{q}", n) for q, n in _walk_defs(tree.body, "")]
    for source, node in found:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield source, doc


def split_summary(doc: str) -> tuple[str, str] | None:
    """``(summary line, body)`` of a PEP 257 docstring, or None when it has no such shape.

    The shape: a one-line summary, a blank line, then a body. A summary that wraps onto a second
    line, or a docstring with no body, does not qualify. The body keeps its lines (the cleaner
    collapses whitespace later).
    """
    lines = doc.split("\n")
    if len(lines) < 3 or not lines[0].strip() or lines[1].strip():
        return None
    body = "\n".join(lines[2:]).strip()
    return (lines[0].strip(), body) if body else None


def _docsum_records(root: Path, scan: StdlibScan) -> Iterator[Record]:
    # Every docstring is scanned (min_chars=1): the body's length is judged by the cleaner's
    # data.clean.min_chars in prepare, where a short one is counted as dropped.
    for _, source, doc in _scan_stdlib(root, 1, scan):
        pair = split_summary(doc)
        if pair is not None:
            yield {"text": pair[1], "target": pair[0], "source": source}


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def stdlib_module_counts(stdlib_dir: str | Path | None = None, min_chars: int = 20) -> dict[str, int]:
    """Docstring records per top-level stdlib module, most first (ties by name)."""
    scan = StdlibScan()
    for _ in _scan_stdlib(_stdlib_root(stdlib_dir), min_chars, scan):
        pass
    return _ranked(scan.module_counts)


def read_stdlib(
    top_k: int | None = 10,
    stdlib_dir: str | Path | None = None,
    min_chars: int = 20,
    *,
    stats: StdlibScan | None = None,
    target_column: str | None = None,
) -> Iterator[Record]:
    """Stream the docstrings of the Python standard library as an offline corpus.

    Files are parsed with :mod:`ast`, never imported. Module, class, function and method
    docstrings of at least ``min_chars`` characters each become a record whose source is the
    dotted module (``"email.mime.text"``) or ``"module:Qual.name"``. The label is the top-level
    module (``"email"``) for the ``top_k`` modules with the most records (ties by name) and None
    for the rest; ``top_k=None`` labels every module. Test suites, site-packages and files that
    fail to parse are skipped; ``stats`` receives the counts, including the unparsable files.

    ``target_column="summary"`` reads the docsum text-to-text task instead: a docstring whose
    summary line is followed by a blank line and a body (:func:`split_summary`) becomes
    ``{"text": body, "target": summary line, "source": ...}``, with no label; ``top_k`` and
    ``min_chars`` do not apply.
    """
    if target_column is not None and target_column != "summary":
        raise UserError(
            f"the stdlib source has one target column, 'summary' (docsum), not "
            f"{target_column!r}; set data.source.target_column=summary or null"
        )
    if top_k is not None and top_k < 0:
        raise UserError(f"top_k={top_k} is negative; use 0 or more (None labels every module)")
    root = _stdlib_root(stdlib_dir)
    scan = stats if stats is not None else StdlibScan()
    if target_column is not None:
        records = _docsum_records(root, scan)
    elif top_k is not None and top_k > 0:
        records = _spooled_by_top_k(root, min_chars, top_k, scan)
    else:
        records = (
            {"text": doc, "label": top if top_k is None else None, "source": source}
            for top, source, doc in _scan_stdlib(root, min_chars, scan)
        )
    empty = True
    for record in records:
        empty = False
        yield record
    scan.module_counts = _ranked(scan.module_counts)
    if empty and target_column is not None:
        raise UserError(
            f"{root}: no docstring has a summary line, a blank line and a body; "
            "point stdlib_dir at a standard library with sources"
        )
    if empty:
        raise UserError(
            f"{root}: no docstrings of {min_chars}+ characters in any .py file; point "
            "stdlib_dir at a standard library with sources (or lower min_chars)"
        )


def _spooled_by_top_k(root: Path, min_chars: int, top_k: int, scan: StdlibScan) -> Iterator[Record]:
    # The top-k modules are only known once every file is counted. Spooling the docstrings to
    # a temporary file keeps memory flat and costs one parse instead of two (parsing dominates).
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        for item in _scan_stdlib(root, min_chars, scan):
            spool.write(json.dumps(item) + "\n")
        labelled = set(list(_ranked(scan.module_counts))[:top_k])
        spool.seek(0)
        for line in spool:
            top, source, doc = json.loads(line)
            yield {"text": doc, "label": top if top in labelled else None, "source": source}
