"""What leaves the machine in MLflow, and whether the MLflow store can be reached at all.

- :func:`redact` keeps credentials and home folders out of logged params and artifacts: a
  tracking URI like ``https://user:token@host`` or ``sqlite:////home/ana/proj/mlflow.db`` would
  otherwise be stored, and shown, in every run.
- :func:`check_store` fails fast, in one line, when the store is unusable: an unreachable server
  (MLflow's client would retry for minutes), a server that refuses the client's credentials
  (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``, read
  from the environment only and never shown) or a SQLite file locked by another process.

Standard library only: imported by :mod:`lmforge.tracking.runs` before MLflow does anything.
"""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError

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
            pass  # it answered: a proxy or an old server without /health is still reachable
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"MLflow server {shown} is unreachable ({reason}); start it (mlflow "
                "server --host 127.0.0.1) or point logger.tracking_uri / "
                "MLFLOW_TRACKING_URI at a reachable store"
            ) from None
        check_credentials(uri, timeout)
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return  # MLflow creates it
        try:
            # BEGIN IMMEDIATE takes the write lock MLflow will need, then gives it back; reading
            # the schema reads the header; a store of modest size is checked page by page.
            connection = sqlite3.connect(path, timeout=timeout)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.rollback()
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if path.stat().st_size <= QUICK_CHECK_BYTES:
                    verdict = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if verdict != "ok":
                        raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
            finally:
                connection.close()
        except sqlite3.Error as exc:
            if _locked(exc):
                raise UserError(
                    f"MLflow store {shown}: {exc} (another process holds it); wait for "
                    "it to finish, or set logger.tracking_uri to another store"
                ) from None
            raise damaged_store(shown, path, exc) from None
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:"))
        if folder.exists() and not os.access(folder, os.W_OK):
            raise UserError(
                f"MLflow store {shown} is not writable; fix its permissions or set logger.tracking_uri"
            )


# PRAGMA quick_check reads every page (about 0.3 s for 100 MB): done up to this size at start;
# damage in a bigger store is named when MLflow reads it (damaged_store via tracking.runs).
QUICK_CHECK_BYTES = 64 * 2**20


def _locked(exc: BaseException) -> bool:
    return any(word in str(exc).lower() for word in ("locked", "busy"))


def damaged_store(shown: str, path: Path, exc: BaseException) -> UserError:
    """The one line for a SQLite store whose header or pages are damaged."""
    reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    path = Path(redact(str(path)))
    return UserError(
        f"MLflow store {shown} is damaged ({reason}); restore {path.name} from a backup, or move it "
        f"aside (mv {path} {path}.damaged) to start a new store, or set logger.tracking_uri to "
        "another store"
    )


def sqlite_damage(exc: BaseException) -> BaseException | None:
    """The SQLite error behind ``exc`` (through SQLAlchemy's and MLflow's wrappers) when it says
    the file is damaged, not merely locked; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if ("malformed" in text or "not a database" in text) and not _locked(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def _auth_header() -> tuple[str | None, str | None]:
    """The Authorization header MLflow's client will send, and the user it names, from the
    environment variables MLflow itself reads."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(), user
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}", None
    return None, None


def check_credentials(uri: str, timeout: float = 5.0) -> None:
    """Raise a one-line :class:`UserError` when the server at ``uri`` refuses this client.

    One cheap authenticated read (search one experiment) before any run starts: without it a
    wrong password surfaces as an MLflow traceback in the middle of a stage, and a sweep's
    parent run would be left behind. The message names the variables to set, never their values.
    """
    shown = redact(uri)
    header, user = _auth_header()
    if header is None and os.environ.get("MLFLOW_TRACKING_AUTH"):
        return  # an auth plugin signs MLflow's requests; this probe cannot sign its own
    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": header} if header else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (http(s) only)
            return
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError):
        return  # /health answered; leave other transport trouble to MLflow's own client
    if code == 401 and header is None:
        raise UserError(
            f"MLflow server {shown} requires a login (HTTP 401); export "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN) before running"
        )
    if code == 401:
        who = f"user '{user}'" if user else "MLFLOW_TRACKING_TOKEN"
        raise UserError(
            f"MLflow server {shown} refused the credentials of {who} (HTTP 401); "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN)"
        )
    if code == 403:
        raise UserError(
            f"MLflow server {shown} denies {user or 'this client'} access (HTTP 403); "
            "ask its admin for permission, or use another account"
        )
