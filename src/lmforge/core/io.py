"""Atomic outputs: a stage writes into a temporary sibling and renames it into place on success.

An interrupted stage then never leaves a half-written output that DVC could cache, and a rerun
after a crash produces exactly what a clean run does.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def input_path(path: str | Path) -> Path:
    """A path to input data from the config, relative to the project folder. A queued ``dvc exp
    run`` works in a copy of the repository under ``.dvc/tmp/exps``, where a relative path to data
    outside the repository (``../shared/data/sst2``) names nothing: a relative path missing from
    the copy is read from ``$DVC_ROOT``, the project folder the experiment was queued from."""
    path = Path(path)
    root = os.environ.get("DVC_ROOT")
    if path.is_absolute() or path.exists() or not root or not (Path(root) / path).exists():
        return path
    return Path(root) / path


def _remove_stale(target: Path) -> None:
    """Leftovers of a run killed with SIGKILL (no cleanup ran): temporaries of any pid."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    The temporary keeps the target's suffix, so writers that pick a format by extension
    (matplotlib's ``savefig``) behave as with the real name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
