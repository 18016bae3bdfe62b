"""What a data folder was made for, so that a stage never reads another run's data.

A failed ``collect`` leaves the previous run's ``data/raw`` in place (its output is atomic), and
``prepare`` would then clean another task's or another source's records without a word. So each
data stage records in its output's meta (``data/raw/meta.json``, ``data/prepared/meta.json``)
``made_for``: the task and small fingerprints of the config that made it (config-derived, never
a hash of the data), and the digest of its input's meta file; the next stage checks them against
the config it runs and refuses in one line naming the file and the stage to re-run.

Folders written before these records existed (or by hand) carry none and are not checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError

MADE_FOR = "made_for"
PREPARED_META = "meta.json"


def fingerprint(payload: Any) -> str:
    """A short digest of a JSON-able config value."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """A short digest of a small file (a stage's meta)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def collected_for(cfg: Config) -> dict:
    """``data/raw``'s record: the task and the source it was collected from."""
    return {"task": cfg.task.name, "source": fingerprint(asdict(cfg.data.source))}


def prepared_for(cfg: Config) -> dict:
    """``data/prepared``'s record: the raw data's and the cleaning/split config's, and the digest
    of the ``data/raw/meta.json`` it was made from (``raw_meta``)."""
    clean = {"clean": asdict(cfg.data.clean), "split": asdict(cfg.data.split)}
    record = {**collected_for(cfg), "prepare": fingerprint(clean)}
    raw_meta = Path(cfg.paths.raw) / "meta.json"
    if raw_meta.is_file():
        record["raw_meta"] = file_digest(raw_meta)
    return record


def _compare(path: Path, made: dict, wanted: dict, stage: str) -> None:
    rerun = f"re-run the {stage} stage (dvc repro {stage})"
    if made.get("task") != wanted["task"]:
        raise UserError(
            f"{path} was made for task={made.get('task')}, this run is task={wanted['task']}; {rerun}"
        )
    what = {"source": "data.source", "prepare": "data.clean/data.split"}
    for key, option in what.items():
        if key in wanted and key in made and made[key] != wanted[key]:
            raise UserError(f"{path} was made with another {option} than this run's; {rerun}")
    if "raw_meta" in wanted and "raw_meta" in made and made["raw_meta"] != wanted["raw_meta"]:
        raise UserError(
            f"{path} was made from another data/raw than the one there now (collected since); {rerun}"
        )


def _recorded(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        made = json.loads(path.read_text()).get(MADE_FOR)
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise UserError(f"{path} is not a readable JSON object; re-run the stage that writes it") from None
    return made if isinstance(made, dict) else None


def check_raw(cfg: Config) -> None:
    """``prepare``: ``data/raw`` was collected for this task and source."""
    path = Path(cfg.paths.raw) / "meta.json"
    made = _recorded(path)
    if made is not None:
        _compare(path, made, collected_for(cfg), "collect")


def check_prepared(cfg: Config) -> None:
    """``tokenize``: ``data/prepared`` was made for this task, source and cleaning, from the
    ``data/raw`` there now."""
    path = Path(cfg.paths.prepared) / PREPARED_META
    made = _recorded(path)
    if made is not None:
        _compare(path, made, prepared_for(cfg), "prepare")
