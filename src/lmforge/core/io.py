"""Atomic outputs: a stage writes into a temporary sibling and renames it into place on success.

An interrupted stage then never leaves a half-written output that DVC could cache, and a rerun
after a crash produces exactly what a clean run does. And checked inputs: :func:`load_json`,
:func:`load_npy` and :func:`torch_load` read what an earlier stage wrote and turn a missing,
truncated or corrupt file into one line naming the file and the stage to rerun.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmforge.core import interrupts
from lmforge.core.errors import UserError


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
    # A Ctrl-C between the two renames would leave neither folder in place: it waits for both
    # (interrupts.deferred; the stage raises it at its next check).
    with interrupts.deferred():
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


# ---------------------------------------------------------------------------------------------
# Reading what an earlier stage wrote: a missing, truncated or corrupt artifact is one line that
# names the file, what is wrong with it and the stage that writes it again. Validation only
# catches the loaders' own errors and checks sizes and headers: nothing is hashed.


def rerun(stage: str) -> str:
    """The fix for a damaged output of ``stage``."""
    return f"rerun the {stage} stage (dvc repro {stage})"


def damaged(path: str | Path, what: str, exc: BaseException | str, fix: str) -> UserError:
    """``UserError('<path> is <what> (<the loader's reason>); <fix>')`` on one line."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return UserError(f"{path} is {what} ({reason}); {fix}")


def _present(path: Path, stage: str, fix: str | None) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file; move it aside and {fix or rerun(stage)}")
    if not path.is_file():
        raise UserError(f"{path} is missing; {fix or f'run the {stage} stage first'}")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes; truncated); {fix or rerun(stage)}")


def load_json(path: str | Path, stage: str, fix: str | None = None) -> Any:
    """The JSON file ``stage`` wrote at ``path``; a one-line :class:`UserError` when it is
    missing, empty, truncated or not JSON."""
    path = Path(path)
    _present(path, stage, fix)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, "not valid JSON (truncated or corrupt)", exc, fix or rerun(stage)) from None


def load_npy(path: str | Path, stage: str, mmap_mode: Any = None) -> Any:
    """A ``.npy`` array ``stage`` wrote (never pickled objects), or a one-line error."""
    import numpy as np

    path = Path(path)
    _present(path, stage, None)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise damaged(path, "not a readable .npy array (truncated or corrupt)", exc, rerun(stage)) from None


def torch_load(path: str | Path, stage: str, fix: str | None = None, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU: tensors and plain containers only, so a
    file cannot run code. A missing, truncated or corrupt file, or one holding other objects,
    is a one-line :class:`UserError` saying to rerun ``stage`` (or ``fix``)."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    _present(path, stage, fix)
    unreadable = "not a readable PyTorch file (truncated or corrupt)"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # A file that is a complete archive but holds more than tensors (weights_only refuses
        # it); anything else failing to unpickle is damaged.
        if zipfile.is_zipfile(path) and "Weights only load failed" in str(exc):
            raise UserError(
                f"{path} holds objects other than tensors and was not loaded (loading it could run "
                f"code); {fix or rerun(stage)}"
            ) from None
        raise damaged(path, unreadable, exc, fix or rerun(stage)) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise damaged(path, unreadable, exc, fix or rerun(stage)) from None


def output_file(path: str | Path, key: str) -> Path:
    """An output file named by config key ``key``: fails at once, before any work, when the path
    is a folder or its parent is a file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{key}={path} is an existing folder; give a file name (e.g. {path / 'out.jsonl'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{key}={path}: {parent} is a file, not a folder; choose another path")
            break
    return path


def load_weights(model: Any, path: str | Path, stage: str, fix: str | None = None, state: Any = None) -> Any:
    """:func:`torch_load` ``path`` (or take its ``state``, already loaded) into ``model`` (a
    ``torch.nn.Module``); weights whose names or shapes do not fit the model its config describes
    are a one-line error too."""
    if state is None:
        state = torch_load(path, stage, fix)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        what = "weights that do not fit the model its config describes"
        raise damaged(path, what, exc, fix or rerun(stage)) from None
    return model
