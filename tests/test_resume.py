"""Interruption and resume: a pretraining run killed with SIGKILL mid-epoch continues from its last
checkpoint into the same MLflow run and ends exactly where an uninterrupted run ends.

Each stage runs as its own ``python -m lmforge.<stage>`` process, as a user would run it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = ["experiment=tiny", "trainer.num_threads=1", "trainer.checkpoint_every_minutes=0"]
# Long enough to kill mid-run (the tiny corpus packs into ~1,000 batches, so all of this is
# mid-epoch); checkpoints every 20 steps, validation every 40, metrics logged every 5.
PRETRAIN = [
    *TINY,
    "pretrain.max_steps=160",
    "trainer.checkpoint_every_n_steps=20",
    "pretrain.val_check_interval=40",
    "trainer.log_every_n_steps=5",
]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LMFORGE_PIPELINE_ID": "resume-test",
        "HYDRA_FULL_ERROR": "0",
    }


def stage(workdir: Path, name: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"lmforge.{name}", *overrides],
        cwd=workdir,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}:\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Raw, prepared and tokenized tiny data; each test copies nothing, only reads it."""
    workdir = tmp_path_factory.mktemp("resume")
    (workdir / "conf").symlink_to(ROOT / "conf")
    for name in ("collect", "prepare", "tokenize"):
        finish(stage(workdir, name, *TINY))
    return workdir


def checkpoint_step(folder: Path) -> int:
    import torch

    return int(torch.load(folder / "last.ckpt", weights_only=True)["global_step"])


def max_logged_step(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
        (step,) = connection.execute("SELECT max(step) FROM metrics WHERE key = 'train/loss'").fetchone()
    return -1 if step is None else int(step)


def logged_past_checkpoint(db: Path, folder: Path) -> bool:
    try:
        return max_logged_step(db) > checkpoint_step(folder)
    except sqlite3.OperationalError:  # tables not created yet
        return False


def mlflow_run(db: Path, experiment: str = "lmforge-pretrain"):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, runs


def histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}


@pytest.mark.slow
@pytest.mark.ci
def test_sigkill_mid_epoch_resumes_into_the_same_run_with_identical_metrics(data: Path) -> None:
    started = time.monotonic()
    # The reference: one uninterrupted run.
    finish(stage(data, "pretrain", *PRETRAIN, f"logger.tracking_uri=sqlite:///{data}/clean.db"))
    reference = json.loads((data / "metrics/pretrain.json").read_text())
    assert not (data / "outputs/checkpoints/pretrain").exists(), "a finished run left checkpoints"

    # The same command, killed with SIGKILL once a checkpoint exists (no cleanup can run).
    db = data / "killed.db"
    command = [*PRETRAIN, f"logger.tracking_uri=sqlite:///{db}"]
    (data / "metrics/pretrain.json").unlink()
    victim = stage(data, "pretrain", *command)
    folder = data / "outputs/checkpoints/pretrain"
    deadline = time.monotonic() + 300
    # Kill once a checkpoint exists AND MLflow holds steps past it: the rerun recomputes those
    # steps, and they must not appear twice.
    while not ((folder / "last.ckpt").is_file() and logged_past_checkpoint(db, folder)):
        assert victim.poll() is None, f"finished before it could be killed: {victim.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (data / "metrics/pretrain.json").exists()
    client, (killed,) = mlflow_run(db)
    assert killed.info.status == "RUNNING"  # nothing could mark it: the rerun must finish it
    state = json.loads((folder / "resume.json").read_text())
    assert state["mlflow_run_id"] == killed.info.run_id
    step_at_kill = checkpoint_step(folder)
    assert 0 < step_at_kill < max_logged_step(db) < 160

    # Rerun the same command: it resumes.
    out = finish(stage(data, "pretrain", *command))
    assert f"resuming the interrupted run (MLflow run {killed.info.run_id}) from" in out
    client, runs = mlflow_run(db)
    assert [r.info.run_id for r in runs] == [killed.info.run_id], "a second run was created"
    assert runs[0].info.status == "FINISHED"
    resumed = json.loads((data / "metrics/pretrain.json").read_text())
    for key in ("val_loss", "val_perplexity", "val_mlm_accuracy", "steps"):
        assert resumed[key] == reference[key], key  # exact: CPU, deterministic, same seed

    got = histories(client, killed.info.run_id)
    clean_client, (clean,) = mlflow_run(data / "clean.db")
    want = histories(clean_client, clean.info.run_id)
    for key in ("train/loss", "val/loss", "val/mlm_accuracy", "data/kept"):
        steps = [step for step, _ in got[key]]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice: {steps}"
        assert sorted(got[key]) == sorted(want[key]), key
    assert not folder.exists()
    print(f"\nkilled at step {step_at_kill}; whole test {time.monotonic() - started:.0f} s")


@pytest.mark.slow
def test_sigterm_marks_the_run_failed_and_finetuning_resumes_to_the_same_result(data: Path) -> None:
    finish(stage(data, "pretrain", *TINY, f"logger.tracking_uri=sqlite:///{data}/pre.db"))
    # Mid-epoch checkpoints every 10 steps; the tiny task has ~50 steps an epoch, 2 epochs.
    finetune = [*TINY, "trainer.checkpoint_every_n_steps=10", "trainer.log_every_n_steps=5"]
    finish(stage(data, "finetune", *finetune, f"logger.tracking_uri=sqlite:///{data}/ft-clean.db"))
    reference = json.loads((data / "metrics/finetune.json").read_text())

    db = data / "ft.db"
    command = [*finetune, f"logger.tracking_uri=sqlite:///{db}"]
    victim = stage(data, "finetune", *command)
    folder = data / "outputs/checkpoints/finetune"
    deadline = time.monotonic() + 300
    while not (folder / "last.ckpt").is_file():
        assert victim.poll() is None, f"finished before it could be stopped: {victim.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGTERM)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "lmforge: error: interrupted by SIGTERM; outputs were left unchanged; run the same command "
            "again to resume"
        )
    )
    client, (stopped,) = mlflow_run(db, "lmforge-finetune")
    assert stopped.info.status == "FAILED"  # never left RUNNING

    out = finish(stage(data, "finetune", *command))
    assert f"resuming the interrupted run (MLflow run {stopped.info.run_id})" in out
    client, runs = mlflow_run(db, "lmforge-finetune")
    assert [r.info.run_id for r in runs] == [stopped.info.run_id]
    assert runs[0].info.status == "FINISHED"
    resumed = json.loads((data / "metrics/finetune.json").read_text())
    # loader_wait_fraction is a wall-clock share, never equal between two runs.
    timing = ("loader_wait_fraction",)
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in reference.items() if k not in timing
    }
    for key, history in histories(client, stopped.info.run_id).items():
        steps = [step for step, _ in history]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice: {steps}"


@pytest.mark.slow
def test_training_stages_hand_gradient_clipping_and_checkpointing_to_lightning(
    data: Path, monkeypatch
) -> None:
    from hydra import compose, initialize_config_dir

    import lmforge.lit.trainer as trainer_module
    from lmforge import finetune, pretrain
    from lmforge.core.config import validate

    seen: dict[str, dict] = {}

    class Captured(Exception):
        pass

    def capture(cfg, run_id, uri, callbacks=None, **overrides):
        seen[cfg.logger.experiment] = {**overrides, "callbacks": callbacks}
        raise Captured

    monkeypatch.setattr(trainer_module, "build_trainer", capture)
    monkeypatch.chdir(data)
    (data / "models/none").mkdir(parents=True, exist_ok=True)
    (data / "models/none/meta.json").write_text('{"enabled": false}')
    for module, clip in ((pretrain, "pretrain.optim.grad_clip=0.5"), (finetune, "optim.grad_clip=0.25")):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = validate(
                compose(
                    "config",
                    overrides=[
                        *TINY,
                        clip,
                        f"logger.experiment={module.__name__}",
                        "paths.pretrained=models/none",
                        f"logger.tracking_uri=sqlite:///{data}/capture.db",
                    ],
                )
            )
        with pytest.raises(Captured):
            module.run(cfg)
    assert seen["lmforge.pretrain"]["gradient_clip_val"] == 0.5
    assert seen["lmforge.finetune"]["gradient_clip_val"] == 0.25
    for options in seen.values():
        names = {type(c).__name__ for c in options["callbacks"]}
        assert {"TrainingState", "ModelCheckpoint", "StopOnNonFiniteLoss"} <= names
