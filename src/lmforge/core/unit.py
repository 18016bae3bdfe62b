"""Folders that belong together, replaced together: all of them or none.

The tokenize stage writes ``data/tokenizer`` and ``data/shards``; the shards hold the ids of
that tokenizer, so one without the other is wrong. Two folders cannot be renamed in one step,
so :func:`atomic_dirs` commits them with a journal:

1. each folder is written into a temporary sibling (``.shards.tmp-PID``); an exception or a
   kill here leaves every target as it was (the temporaries are removed, now or on the next run);
2. once all are complete, a journal beside the first target (``.tokenizer.unit.json``) is
   written atomically, naming each temporary and its target: from here the new set wins;
3. each target is moved aside and its temporary renamed into place; then the journal goes.

A kill during 3 leaves the journal: :func:`recover` (run by the next :func:`atomic_dirs` on
the same targets) finishes the renames, so the new set is complete; readers that find the
journal (:func:`interrupted_commit`) refuse rather than read a half-swapped set. SIGINT and
SIGTERM are deferred during 2-3, so only SIGKILL (or a power cut) can leave a journal behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmforge.core import interrupts
from lmforge.core.io import write_json


def journal_path(targets: list[Path]) -> Path:
    first = targets[0]
    return first.with_name(f".{first.name}.unit.json")


def interrupted_commit(*targets: str | Path) -> Path | None:
    """The journal of a commit of ``targets`` that a kill interrupted, if one is on disk."""
    journal = journal_path([Path(t) for t in targets])
    return journal if journal.is_file() else None


def _remove_stale(target: Path) -> None:
    """Temporaries and set-aside folders of earlier runs (any pid) that no journal names."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for stale in target.parent.glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _roll_forward(journal: Path) -> None:
    base = journal.parent
    moves = json.loads(journal.read_text())["moves"]
    for tmp_name, target_name in moves:
        tmp, target = base / tmp_name, base / target_name
        if not tmp.exists():  # already renamed into place before the kill
            continue
        if target.exists():
            aside = target.with_name(f".{target.name}.old-{os.getpid()}")
            if aside.exists():
                shutil.rmtree(aside)
            target.rename(aside)
        tmp.rename(target)
    journal.unlink()


def recover(*targets: str | Path) -> None:
    """Finish a commit of ``targets`` that a kill interrupted (its journal says which
    temporaries are complete), then remove every leftover temporary."""
    paths = [Path(t) for t in targets]
    journal = journal_path(paths)
    with interrupts.deferred():
        if journal.is_file():
            _roll_forward(journal)
        for stale in journal.parent.glob(f".{journal.name}.tmp-*"):  # write_json's own temporary
            stale.unlink(missing_ok=True)
        for target in paths:
            _remove_stale(target)


@contextmanager
def atomic_dirs(*targets: str | Path) -> Iterator[list[Path]]:
    """Yield one empty temporary folder per target; they replace the targets, all together, only
    if the block succeeds (see the module docstring)."""
    paths = [Path(t) for t in targets]
    for target in paths:
        target.parent.mkdir(parents=True, exist_ok=True)
    recover(*paths)
    tmps = [t.with_name(f".{t.name}.tmp-{os.getpid()}") for t in paths]
    try:
        for tmp in tmps:
            tmp.mkdir()
        yield tmps
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    journal = journal_path(paths)
    with interrupts.deferred():  # a Ctrl-C now waits: the commit is short and must finish
        moves = [[os.path.relpath(t, journal.parent) for t in pair] for pair in zip(tmps, paths, strict=True)]
        write_json(journal, {"moves": moves})
        _roll_forward(journal)
        for target in paths:
            _remove_stale(target)
