"""Links into the MLflow UI: the finetune runs table that ``lmforge ui`` serves and the pipeline
summary points to.

MLflow 3's UI is a single-page app: an experiment's runs table is ``<base>/#/experiments/<id>/runs``
(the page tests/test_mlflow_ui.py reaches from the home page). A store on a tracking server is its
own UI (``<server>/#/...``); a SQLite store is served by ``mlflow ui`` on ``UI_HOST:UI_PORT``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

UI_HOST = "127.0.0.1"
UI_PORT = 5000


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def ui_base(uri: str, host: str = UI_HOST, port: int = UI_PORT) -> str:
    """Where the UI of store ``uri`` answers: the server itself (without credentials), else the
    local ``mlflow ui``."""
    if is_server(uri):
        parts = urlsplit(uri)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"http://{host}:{port}"


def runs_table_url(base: str, experiment_id: str) -> str:
    """The runs table of experiment ``experiment_id`` in the UI at ``base``."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


@contextmanager
def _short_http_retries() -> Iterator[None]:
    """A server that does not answer costs seconds, not MLflow's minutes of retries."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in store ``uri``; None when it (or the store) does not exist
    or cannot be read. A missing SQLite file is not created."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow import MlflowClient

    try:
        with _short_http_retries():
            experiment = MlflowClient(uri).get_experiment_by_name(name)
    except Exception:
        return None
    return experiment.experiment_id if experiment is not None else None


def finetune_runs_link(uri: str, experiment: str, host: str = UI_HOST, port: int = UI_PORT) -> str | None:
    """The runs table of ``<experiment>-finetune`` in the UI of store ``uri``; None before the
    first finetune run."""
    found = experiment_id(uri, f"{experiment}-finetune")
    return runs_table_url(ui_base(uri, host, port), found) if found is not None else None
