"""An offline pretraining corpus every installed environment holds: the docstrings of the
packages pinned in a lock file (``requirements.lock``).

Files are listed from each distribution's own RECORD and parsed with :mod:`ast`, never imported.
Packages are read in lock-file name order and each one's files in path order, so the same lock
file installed from the same wheels gives the same corpus, record for record; the scan records
every package's pinned and installed version next to its counts.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.core.errors import UserError
from lmforge.data.readers import Record
from lmforge.data.stdlib import module_docstrings

# Test suites hold throwaway docstrings ("Test that foo works"); vendored trees repeat packages
# read on their own (deduplication would drop most of them anyway).
_SKIPPED_DIRS = frozenset({"test", "tests", "testing", "__pycache__"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


@dataclass
class DocstringScan:
    """What a scan read; pass one to :func:`read_docstrings` to get the figures back."""

    lock_file: str = ""
    packages: list[dict] = field(default_factory=list)
    not_installed: list[str] = field(default_factory=list)
    version_mismatch: list[str] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)
    files: int = 0
    records: int = 0


def pinned_packages(lock_file: str | Path) -> list[tuple[str, str]]:
    """``(name, version)`` of every ``name==version`` line, sorted by normalised name."""
    path = Path(lock_file)
    if not path.is_file():
        raise UserError(
            f"{path}: no such lock file; point corpus.source.path at a requirements.lock "
            "(name==version lines)"
        )
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    if not pins:
        raise UserError(f"{path}: no name==version lines; point corpus.source.path at a lock file")
    return sorted(pins.items())


def _module_files(dist) -> list[tuple[str, str, Path]]:
    """``(relative path, dotted module, absolute path)`` of a distribution's importable,
    non-test ``.py`` files, in path order."""
    found = []
    for file in dist.files or ():
        relative = str(file).replace("\\", "/")
        if not relative.endswith(".py") or relative.startswith(".."):
            continue
        parts = relative[:-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if (
            not parts
            or not all(p.isidentifier() for p in parts)
            or any(p in _SKIPPED_DIRS for p in parts)
            or parts[-1].startswith("test_")
        ):
            continue
        found.append((relative, ".".join(parts), Path(dist.locate_file(file))))
    return sorted(found)


def read_docstrings(
    lock_file: str | Path, *, stats: DocstringScan | None = None, processes: int | None = None
) -> Iterator[Record]:
    """Stream the docstrings of every package pinned in ``lock_file`` that is installed here.

    Each module, class, function and method docstring becomes ``{"text": docstring, "source":
    "name==version:module[:Qual.name]"}`` (no label). A pinned package that is not installed is
    skipped and listed in ``stats.not_installed``; one installed at another version is read and
    listed in ``stats.version_mismatch`` (local suffixes such as ``+cpu`` do not count). Files
    are parsed by ``processes`` workers (null: one per core, at most 8); the output is the same
    for any number.
    """
    scan = stats if stats is not None else DocstringScan()
    scan.lock_file = str(lock_file)
    pins = pinned_packages(lock_file)
    workers = min(os.cpu_count() or 1, 8) if processes is None else processes
    if workers > 1:
        pool = ProcessPoolExecutor(workers)
        try:
            yield from _scan(pins, scan, pool)
        finally:
            # A reader that stops early (max_records) leaves files queued: drop them.
            pool.shutdown(cancel_futures=True)
    else:
        yield from _scan(pins, scan, None)
    if scan.records == 0:
        raise UserError(
            f"{lock_file}: no docstrings in the {len(scan.packages)} pinned packages installed "
            f"here ({len(scan.not_installed)} not installed); install them with "
            "pip install -c requirements.lock, or point corpus.source.path at another lock file"
        )


def _file_docstrings(file: tuple[str, str, Path]) -> list[tuple[str, str]] | None:
    """Every docstring of one file, or None when it does not parse."""
    _, module, path = file
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, OSError):
        return None
    return list(module_docstrings(tree, module))


def _scan(pins: list[tuple[str, str]], scan: DocstringScan, pool: Executor | None) -> Iterator[Record]:
    from importlib import metadata

    for name, pinned in pins:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            scan.not_installed.append(f"{name}=={pinned}")
            continue
        installed = dist.version
        if installed.split("+", 1)[0] != pinned.split("+", 1)[0]:
            scan.version_mismatch.append(f"{name}: pinned {pinned}, installed {installed}")
        entry = {"name": name, "pinned": pinned, "installed": installed, "files": 0, "docstrings": 0}
        scan.packages.append(entry)
        files = _module_files(dist)
        # Parsing is the cost (~100 CPU-s for the 20k files of this project's lock); `map` keeps
        # the file order, so the corpus is the same with any number of workers.
        parsed = pool.map(_file_docstrings, files, chunksize=32) if pool else map(_file_docstrings, files)
        for (relative, _, _), docs in zip(files, parsed, strict=True):
            if docs is None:
                scan.unparsable.append(f"{name}:{relative}")
                continue
            entry["files"] += 1
            scan.files += 1
            for source, doc in docs:
                entry["docstrings"] += 1
                scan.records += 1
                yield {"text": doc, "source": f"{name}=={installed}:{source}"}
