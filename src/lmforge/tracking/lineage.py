"""What a run consumed: DVC hashes of the data and tokenizer, and the splits as MLflow datasets.

Every tracked run is tagged, for each DVC output it reads (``data/shards`` and ``data/tokenizer``;
finetuning also ``models/pretrained``, evaluation ``models/finetuned``), with

- ``lmforge.lineage.<name>.dvc_md5``: the hash ``dvc.lock`` records for that output, so a run can
  be traced to the DVC version of its inputs (``dvc checkout`` / ``dvc pull`` restore it);
- ``lmforge.lineage.<name>.dvc_state``: ``verified`` when the folder on disk still matches that
  hash (checked file by file against DVC's ``.dir`` manifest in the cache), ``modified`` when it
  does not (the stage was run by hand after ``dvc repro``), ``unverified`` when the manifest is
  not in the cache, ``absent`` when ``dvc.lock`` does not record the folder;
- ``lmforge.lineage.<name>.sha256``: a content hash of the folder computed here, which holds
  with or without DVC.

Only the standard library and PyYAML (a dependency of OmegaConf) at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from lmforge.core.config import Config

TAG_PREFIX = "lmforge.lineage."
# The DVC-tracked folders (keys of ``paths``) each stage reads.
STAGE_INPUTS = {
    "pretrain": ("shards", "tokenizer"),
    "finetune": ("shards", "tokenizer", "pretrained"),
    "evaluate": ("shards", "tokenizer", "finetuned"),
}
# The prepared splits each stage reads, logged as MLflow dataset inputs, and whether it reads only
# the labelled rows (finetuning and evaluation skip the unlabelled text pretraining uses).
STAGE_SPLITS = {
    "pretrain": (("train", "val"), False),
    "finetune": (("train", "val"), True),
    "evaluate": (("test",), True),
}


def folder_sha256(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_lock_outs(root: Path) -> dict[str, str]:
    """``{out path: md5}`` for every stage output recorded in ``root/dvc.lock``."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    import yaml

    data = yaml.safe_load(lock.read_text()) or {}
    outs: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if "md5" in out:
                outs[str(out["path"]).rstrip("/")] = str(out["md5"])
    return outs


def _cache_dirs(root: Path) -> list[Path]:
    # A queued `dvc exp run` works in a temporary copy whose cache is the user's: $DVC_ROOT.
    roots = [root]
    if os.environ.get("DVC_ROOT"):
        roots.append(Path(os.environ["DVC_ROOT"]))
    return [r / ".dvc" / "cache" / "files" / "md5" for r in roots]


def dvc_state(root: Path, folder: Path, md5: str) -> str:
    """Whether ``folder`` still holds what DVC recorded as ``md5`` (see the module docstring)."""
    if not md5.endswith(".dir"):
        return "verified" if folder.is_file() and _file_md5(folder) == md5 else "modified"
    name = md5.removesuffix(".dir")
    for cache in _cache_dirs(root):
        manifest = cache / name[:2] / f"{name[2:]}.dir"
        if manifest.is_file():
            entries = {e["relpath"]: e["md5"] for e in json.loads(manifest.read_text())}
            on_disk = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
            same = set(entries) == set(on_disk) and all(
                _file_md5(on_disk[rel]) == md5_ for rel, md5_ in entries.items()
            )
            return "verified" if same else "modified"
    return "unverified"


def lineage_tags(cfg: Config, stage: str, root: Path | None = None) -> dict[str, str]:
    """Tags naming the exact data, tokenizer and model a stage read (see the module docstring)."""
    root = (root or Path.cwd()).resolve()
    outs = dvc_lock_outs(root)
    tags: dict[str, str] = {}
    for name in STAGE_INPUTS.get(stage, ("shards", "tokenizer")):
        folder = Path(getattr(cfg.paths, name))
        folder = folder if folder.is_absolute() else root / folder
        if not folder.exists():
            continue
        try:
            key = folder.resolve().relative_to(root).as_posix()
        except ValueError:
            key = str(folder)
        tags[f"{TAG_PREFIX}{name}.path"] = key
        tags[f"{TAG_PREFIX}{name}.sha256"] = folder_sha256(folder)
        md5 = outs.get(key)
        tags[f"{TAG_PREFIX}{name}.dvc_md5"] = md5 or "none"
        tags[f"{TAG_PREFIX}{name}.dvc_state"] = dvc_state(root, folder, md5) if md5 else "absent"
    return tags


def log_input_retrying(dataset: Any, context: str, attempts: int = 5) -> None:
    """``mlflow.log_input``, retried when a parallel job inserted the same dataset first.

    MLflow's SQL store checks for the dataset, then inserts it: two sweep jobs logging the same
    split at once can both miss it, and the second insert fails on the unique constraint. On
    the retry the dataset exists and is only linked to the run.
    """
    import time

    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            if "UNIQUE constraint failed: datasets" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def log_split_inputs(cfg: Config, stage: str) -> list[Any]:
    """Log the prepared splits a stage reads as MLflow dataset inputs (text and label columns).

    The UI's run page then lists them with their digest, row count and schema, and runs that read
    the same data share a digest.
    """
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    from lmforge.core.io import read_jsonl

    splits, labelled_only = STAGE_SPLITS.get(stage, ((), False))
    logged = []
    for split in splits:
        path = Path(cfg.paths.prepared) / f"{split}.jsonl"
        if not path.is_file():
            continue
        # Labels as strings (or None): one column type whether the source's labels are ints or names.
        rows = [
            {"text": r["text"], "label": None if r.get("label") is None else str(r["label"])}
            for r in read_jsonl(path)
            if not labelled_only or r.get("label") is not None
        ]
        frame = pd.DataFrame(rows, columns=["text", "label"])
        has_labels = bool(frame["label"].notna().any())
        with warnings.catch_warnings():
            # A local path matches two equivalent source kinds; MLflow warns and picks one.
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
            dataset = from_pandas(
                frame, source=str(path.resolve()), name=split, targets="label" if has_labels else None
            )
        log_input_retrying(dataset, split)
        logged.append(dataset)
    return logged
