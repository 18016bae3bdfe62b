"""Ctrl-C and SIGTERM as an exception, raised where it is safe to stop.

The stage commands turn both signals into :class:`Interrupted`, so ``with`` blocks unwind: atomic
outputs are discarded and the MLflow run is marked FAILED rather than left RUNNING. Raised at an
arbitrary point, though, the exception can land inside an MLflow write and leave its SQLite
transaction holding the lock that marking the run FAILED then needs. So while training runs
(:func:`deferred`), a signal only sets a flag, and :func:`check` raises it at the next batch
boundary (:class:`lmforge.lit.callbacks.InterruptAtBatchEnd`); a second signal while one is
pending raises at once, for a user who insists. Standard library only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0
_pending: int | None = None


class Interrupted(BaseException):
    """A BaseException, not KeyboardInterrupt: Lightning turns KeyboardInterrupt into ``exit(1)``
    but re-raises any other exception after shutting its loggers down."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def handler(signum: int, frame: object) -> None:
    """The SIGINT/SIGTERM handler the stage commands install."""
    global _pending
    if _depth and _pending is None:
        _pending = signum
        return
    _pending = None
    raise Interrupted(signum)


def message(name: str) -> str:
    """What the stage commands print, after ``lmforge: error:``, when a signal stopped them."""
    return (
        f"interrupted by {name}; outputs were left unchanged; run the same command again to "
        "resume pretrain/finetune from their last checkpoint (resume=false starts afresh)"
    )


def _exit_at_start(signum: int, frame: object) -> None:
    # Nothing is open or written yet: say so in one line and leave at once (no unwinding through
    # a half-done import, which could print a traceback or be swallowed by a library).
    name = signal.Signals(signum).name
    os.write(2, f"lmforge: error: {message(name)}\n".encode())
    os._exit(128 + signum)


def early() -> None:
    """Ctrl-C and SIGTERM during start-up (the imports before a stage's front door runs) exit
    130/143 with one line. Installed by ``lmforge/__init__`` for ``python -m lmforge.<stage>``;
    the front door replaces it with :func:`install`."""
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _exit_at_start)
    except ValueError:  # not the main thread: leave signals to the program that imported us
        pass


def install() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def check() -> None:
    """Raise a signal that arrived while interrupts were deferred."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)


def pending() -> int | None:
    """The signal waiting for the next batch end, if any."""
    return _pending


def stop() -> None:
    """Raise now: the pending signal, or SIGTERM for a DDP rank stopping because another one
    was signalled."""
    global _pending
    signum, _pending = _pending or signal.SIGTERM, None
    raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def enter() -> None:
    """:func:`deferred` for hooks that cannot hold a ``with`` block (Lightning callbacks)."""
    global _depth
    _depth += 1


def leave() -> None:
    global _depth
    _depth = max(0, _depth - 1)
