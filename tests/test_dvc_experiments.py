"""Queued DVC experiments, two at a time, land in the project's one MLflow store.

``dvc exp run --queue -S ...`` twice, then ``dvc queue start -j 2``: each experiment runs in its
own temporary copy of the repository, yet both finetuning runs (and their evaluations) must be in
``<project>/mlflow.db`` ($DVC_ROOT), and ``dvc plots diff`` must overlay their learning curves.
On a copy of the tiny project, whose data and pretrained encoder DVC restores from its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cmd

pytestmark = [pytest.mark.slow, pytest.mark.ci]

EXPERIMENTS = {"lr-high": "0.01", "lr-low": "0.001"}


def wait_for_queue(repo: Path, seconds: float = 1200) -> str:
    deadline = time.monotonic() + seconds
    while True:
        status = run_cmd("dvc", "queue", "status", cwd=repo)
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            logs = "\n".join(run_cmd("dvc", "queue", "logs", name, cwd=repo)[-3000:] for name in EXPERIMENTS)
            pytest.fail(f"queue still busy after {seconds} s:\n{status}\n{logs}")
        time.sleep(10)


def stop_workers(repo: Path) -> None:
    """End the queue's workers, which otherwise linger when a shutdown message of theirs is lost
    (their monitor asks the broker each minute whether the queue is empty)."""
    wdir = repo / ".dvc" / "tmp" / "exps" / "celery"  # DVC names its workers by this folder
    node = "dvc-exp-" + hashlib.sha256(str(wdir).encode()).hexdigest()[:6] + "-"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "queue-worker" in cmdline and node in cmdline:
                os.kill(int(proc.name), signal.SIGTERM)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read


def test_queued_experiments_run_two_at_a_time_into_one_store(tiny_project: Path, tmp_path: Path) -> None:
    import mlflow

    repo = tmp_path / "repo"
    shutil.copytree(
        tiny_project, repo, symlinks=True, ignore=shutil.ignore_patterns("multirun", "outputs", "__pycache__")
    )
    # The project's own ignores: the store, sweep folders and plots/ stay out of git (DVC refuses
    # an output that git tracks).
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    run_cmd("git", "add", "-A", cwd=repo)
    run_cmd("git", "commit", "-qm", "data and pretrained encoder", cwd=repo)
    for name, lr in EXPERIMENTS.items():
        # -S recomposes params.yaml from conf/ and the overrides alone: experiment=tiny again,
        # or DVC would rerun every stage on the default config.
        run_cmd(
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            name,
            "-S",
            "experiment=tiny",
            "-S",
            f"optim.lr={lr}",
            "-S",
            "finetune.max_epochs=1",
            cwd=repo,
        )
    run_cmd("dvc", "queue", "start", "-j", "2", cwd=repo)
    try:
        status = wait_for_queue(repo)
    finally:
        stop_workers(repo)
    assert status.count("Success") == 2, status
    # Only the stages downstream of the changed parameters ran: collect..pretrain came from cache.
    logs = "".join(run_cmd("dvc", "queue", "logs", name, cwd=repo) for name in EXPERIMENTS)
    assert "Running stage 'pretrain'" not in logs and "Running stage 'finetune'" in logs

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    finetune = client.search_runs([client.get_experiment_by_name("lmforge-finetune").experiment_id])
    assert sorted(r.data.params["optim.lr"] for r in finetune) == sorted(EXPERIMENTS.values())
    assert all(r.info.status == "FINISHED" and "val/f1" in r.data.metrics for r in finetune)
    # Named after their DVC experiments, as `dvc exp show` lists them.
    assert {r.data.tags["lmforge.dvc_experiment"] for r in finetune} == set(EXPERIMENTS)
    assert {r.info.run_name for r in finetune} == {f"finetune-{name}" for name in EXPERIMENTS}
    evaluate = client.search_runs([client.get_experiment_by_name("lmforge-evaluate").experiment_id])
    assert {r.data.tags["lmforge.finetune_run_id"] for r in evaluate} == {r.info.run_id for r in finetune}
    # Run in the temporary copies, yet with the DVC versions of their inputs recorded.
    assert all(r.data.tags["lmforge.lineage.shards.dvc_state"] == "verified" for r in finetune)
    starts = sorted(r.info.start_time for r in finetune)
    ends = sorted(r.info.end_time for r in finetune)
    assert starts[1] < ends[0], "the two experiments did not run at the same time"

    # Both experiments' learning curves, overlaid by `dvc plots diff`.
    plots, _ = json.JSONDecoder().raw_decode(
        run_cmd("dvc", "plots", "diff", "--json", *EXPERIMENTS, cwd=repo)
    )
    (curves,) = plots["data"]["plots/finetune_curves.csv"]
    assert set(curves["revisions"]) == set(EXPERIMENTS)
