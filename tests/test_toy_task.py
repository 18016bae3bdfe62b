"""A task from outside lmforge, registered through the ``lmforge.tasks`` entry point group
only (tests/toy_task, declared by a ``*.dist-info/entry_points.txt`` on the subprocesses'
path), runs through the stages' command lines: they find it in the registry, type its
``task.*`` keys with its dataclass and call its hooks, none of them assuming a built-in task."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cmd

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("collect", "prepare", "tokenize", "baselines", "pretrain", "finetune", "evaluate", "report")
WORDS = [
    "river",
    "stone",
    "cloud",
    "lamp",
    "paper",
    "window",
    "garden",
    "little",
    "bright",
    "quiet",
    "early",
    "green",
]


def toy_records(rng: random.Random, n: int, threshold: int) -> list[dict]:
    records = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.choice((3, 4, 14, 18)))]
        text = f"text {i} " + " ".join(words)
        records.append({"text": text, "label": "long" if len(text) >= threshold else "short"})
    return records


def register(folder: Path) -> Path:
    """A distribution's metadata declaring the toy task, as pip would install it."""
    info = folder / "lmforge_toy_task-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lmforge-toy-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lmforge.tasks]\nlength_bucket = toy_task:LengthBucketTask\n")
    return folder


@pytest.mark.slow
@pytest.mark.ci
def test_a_task_from_an_entry_point_runs_every_stage(tmp_path: Path) -> None:
    threshold = 50
    data = tmp_path / "toy.jsonl"
    rows = toy_records(random.Random(0), 300, threshold)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "project"
    work.mkdir()
    (work / "conf").symlink_to(ROOT / "conf")
    path = [str(ROOT / "src"), str(ROOT / "tests"), str(register(tmp_path / "site"))]
    env = {"PYTHONPATH": ":".join(path)}
    uri = f"sqlite:///{work}/mlflow.db"
    overrides = [
        "experiment=tiny",
        f"logger.tracking_uri={uri}",
        "logger.registered_model=null",
        "data.source.kind=local",
        f"data.source.path={data}",
        "data.clean.min_chars=5",
        "task.name=length_bucket",
        f"+task.threshold={threshold}",
        "pretrain.enabled=false",
        "hydra.run.dir=outputs/run",
    ]
    out = {
        stage: run_cmd(sys.executable, "-m", f"lmforge.{stage}", *overrides, cwd=work, env=env)
        for stage in STAGES
    }

    # Each stage went through the toy task's hooks.
    assert "texts to bucket by length" in out["collect"]
    long_train = json.loads((work / "data/prepared/cleaning.json").read_text())["long_train_texts"]
    assert f"{long_train} long train texts" in out["prepare"] and long_train > 0
    assert json.loads((work / "metrics/baselines.json").read_text()) == {"rule": {"threshold": threshold}}
    assert json.loads((work / "models/finetuned/config.json").read_text())["task"] == "length_bucket"
    assert "length_bucket  best val F1" in out["report"]
    with sqlite3.connect(work / "mlflow.db") as db:
        keys = {key for (key,) in db.execute("SELECT DISTINCT key FROM metrics")}
        params = dict(db.execute("SELECT key, value FROM params WHERE key LIKE 'task.%'"))
    assert "best_val_f1" in keys and any(k.startswith("test") or k in ("accuracy", "f1") for k in keys), keys
    assert params.get("task.name") == "length_bucket" and params.get("task.threshold") == str(threshold), (
        params
    )

    # Its typed config rejects a wrong type in one line, before anything runs.
    bad = [o for o in overrides if not o.startswith("+task.threshold")] + ["+task.threshold=many"]
    done = subprocess.run(
        [sys.executable, "-m", "lmforge.prepare", *bad],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "task.threshold" in done.stderr, done.stderr
