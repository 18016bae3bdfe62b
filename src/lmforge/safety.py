"""What leaves the machine in MLflow, and whether the MLflow store can be reached at all.

- :func:`redact` keeps credentials and home folders out of logged params and artifacts: a
  tracking URI like ``https://user:token@host`` or ``sqlite:////home/ana/proj/mlflow.db`` would
  otherwise be stored, and shown, in every run.
- :func:`check_store` fails fast, in one line, when the store is unusable: an unreachable server
  (MLflow's client would retry for minutes) or a SQLite file locked by another process.

Standard library only: imported by :mod:`lmforge.tracking` before MLflow does anything.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|key|secret|password|passwd|sig|signature)=)[^&\s]+")


def redact(value: Any) -> Any:
    """A copy of ``value`` (nested dicts/lists/str) without credentials or the home folder."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if not isinstance(value, str):
        return value
    text = _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\g<scheme>***@", value))
    home = str(Path.home())
    if len(home) > 1:
        text = text.replace(home, "~")
    return text


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Raise a one-line :class:`UserError` unless the MLflow store at ``uri`` answers now."""
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        request = urllib.request.Request(uri.rstrip("/") + "/health")
        try:
            with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (http(s) only)
                pass
        except urllib.error.HTTPError:
            return  # it answered: a proxy or an old server without /health is still reachable
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"MLflow server {shown} is unreachable ({reason}); start it (mlflow "
                            "server --host 127.0.0.1) or point logger.tracking_uri / "
                            "MLFLOW_TRACKING_URI at a reachable store") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return  # MLflow creates it
        try:
            # BEGIN IMMEDIATE takes the write lock MLflow will need, then gives it back.
            connection = sqlite3.connect(path, timeout=timeout)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.rollback()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise UserError(f"MLflow store {shown}: {exc} (another process holds it); wait for "
                            "it to finish, or set logger.tracking_uri to another store") from None
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        if folder.exists() and not os.access(folder, os.W_OK):
            raise UserError(f"MLflow store {shown} is not writable; fix its permissions or set "
                            "logger.tracking_uri")
