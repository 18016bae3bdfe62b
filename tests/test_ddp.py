"""Training in two processes (``trainer=ddp``: gloo on the CPU): each sample once per epoch across
ranks, validation without padded duplicates, one MLflow run whose every step is logged once, one
set of checkpoints, and a run killed with SIGKILL resumed by the same command into the same run.

The stage runs as ``python -m lmforge.finetune trainer=ddp``, as a user would run it: Lightning
starts rank 1 as a copy of that command.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lmforge.lit.distributed import EvalSampler
from lmforge.lit.resume import ResumableSampler

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [64, 65, 67])
@pytest.mark.parametrize("grouped", [False, True])
def test_each_training_sample_is_read_once_per_epoch_across_ranks(size: int, grouped: bool) -> None:
    world, batch = 2, 8
    lengths = [(i * 37) % 50 + 1 for i in range(size)]
    samplers = [
        ResumableSampler(size, seed=3, lengths=lengths if grouped else None, batch_size=batch)
        for _ in range(world)
    ]
    for rank, sampler in enumerate(samplers):
        sampler.shard(world, rank)
        sampler.set_epoch(1)
    shares = [list(s) for s in samplers]
    # Equal shares (a rank with fewer batches would hang the gradient all-reduce)...
    assert len(shares[0]) == len(shares[1]) == len(samplers[0]) == -(-size // world)
    # ...covering every sample, repeating only the few that even out an odd split.
    counts = Counter(shares[0] + shares[1])
    assert set(counts) == set(range(size))
    assert sum(counts.values()) - size == (-size) % world
    # Together the ranks read one epoch of the one-process order for the global batch.
    whole = ResumableSampler(size, seed=3, lengths=lengths if grouped else None, batch_size=batch * world)
    whole.set_epoch(1)
    interleaved = [i for pair in zip(*shares, strict=True) for i in pair]
    assert interleaved[:size] == list(whole)
    if grouped:  # each rank's batch is cut from one global batch of similar lengths
        order = list(whole)
        for start in range(0, size - size % (batch * world), batch * world):
            group = order[start : start + batch * world]
            for share in shares:
                step = share[start // world : start // world + batch]
                assert set(step) <= set(group)


def test_a_resumed_epoch_skips_what_this_rank_had_read() -> None:
    sampler = ResumableSampler(40, seed=0)
    sampler.shard(2, 1)
    sampler.set_epoch(0)
    full = list(sampler)
    sampler.skip(0, 8)
    assert list(sampler) == full[8:]


def test_validation_shares_hold_every_sample_once() -> None:
    samplers = [EvalSampler(211) for _ in range(2)]
    for rank, sampler in enumerate(samplers):
        sampler.shard(2, rank)
    shares = [list(s) for s in samplers]
    assert sorted(shares[0] + shares[1]) == list(range(211))
    assert [len(s) for s in samplers] == [106, 105]
    samplers[0].shard(1, 0)  # after fit: rank 0 scores the whole split alone
    assert list(samplers[0]) == list(range(211))


@pytest.mark.parametrize(
    ("variables", "leader"),
    [
        ({}, True),  # one process
        ({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "2"}, True),  # Lightning's rank 0
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, False),  # the copy Lightning started
        ({"NODE_RANK": "1"}, False),  # first process of the second machine
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),
        ({"SLURM_PROCID": "5"}, False),  # srun
    ],
)
def test_only_global_rank_zero_leads(monkeypatch, variables: dict, leader: bool) -> None:
    from lmforge.lit.distributed import RANK_VARIABLES, is_leader

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert is_leader() is leader


# ---------------------------------------------------------------------------------------------
# End to end, two processes.

TINY = ["experiment=tiny", "pretrain.enabled=false", "logger.registered_model=null"]
# One epoch (26 steps a rank on the built-in corpus) validated twice; a checkpoint at step 10
# and 20, metrics at every step: the kill below lands in steps 11-19 or 21-25.
DDP = [
    *TINY,
    "trainer=ddp",
    "trainer.num_threads=1",
    "trainer.checkpoint_every_minutes=0",
    "trainer.checkpoint_every_n_steps=10",
    "trainer.log_every_n_steps=1",
    "finetune.max_epochs=1",
    "finetune.val_check_interval=0.5",
]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LMFORGE_PIPELINE_ID": "ddp-test",
        "OMP_NUM_THREADS": "1",
    }


def start(workdir: Path, name: str, *overrides: str) -> subprocess.Popen:
    # Its own process group: SIGKILL reaches rank 1 too, as a node failure would.
    return subprocess.Popen(
        [sys.executable, "-m", f"lmforge.{name}", *overrides],
        cwd=workdir,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 900) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}:\n{out}\n{err}"
    return out


def logged_past_checkpoint(db: Path, folder: Path, saved: dict) -> bool:
    """Whether MLflow holds a training step past ``last.ckpt``'s (``saved`` caches its step by
    modification time: a poll must stay cheap to land inside the window)."""
    import torch

    try:
        stamp = (folder / "last.ckpt").stat().st_mtime_ns
        if saved.get("stamp") != stamp:
            saved.update(stamp=stamp, step=torch.load(folder / "last.ckpt", weights_only=True)["global_step"])
        with sqlite3.connect(db, timeout=30) as connection:
            (step,) = connection.execute("SELECT max(step) FROM metrics WHERE key = 'train/loss'").fetchone()
    except (sqlite3.OperationalError, FileNotFoundError, RuntimeError, EOFError):
        return False  # no tables, or no checkpoint, yet
    return step is not None and step > saved["step"]


def prepare_data(workdir: Path) -> None:
    """collect, prepare, tokenize and (disabled) pretrain, in this process: the inputs only."""
    from contextlib import chdir

    from hydra import compose, initialize_config_dir

    from lmforge import collect, prepare, pretrain, tokenize
    from lmforge.core.config import validate

    with initialize_config_dir(str(workdir / "conf"), version_base="1.3"):
        cfg = validate(
            compose("config", overrides=[*TINY, f"logger.tracking_uri=sqlite:///{workdir}/prep.db"])
        )
    with chdir(workdir):
        for stage in (collect, prepare, tokenize, pretrain):
            stage.run(cfg)


def score_in_one_process(workdir: Path) -> float:
    """Macro F1 of the saved model on the whole validation split, in this one process."""
    from torch.utils.data import DataLoader

    from lmforge.data.datasets import LabelledRecords, pad_batch
    from lmforge.data.tokenization import TokenShards
    from lmforge.tasks.classification.scoring import load_classifier, score

    model, labels, _, max_len = load_classifier(workdir / "models/finetuned")
    shards = TokenShards(workdir / "data/shards", "val")
    # 211 examples on the built-in corpus: padding the two shares would score one twice.
    val = LabelledRecords(shards, max_len)
    pad = shards.meta["special_ids"]["pad"]
    loader = DataLoader(val, batch_size=64, collate_fn=lambda items: pad_batch(items, pad))
    overall, *_ = score(model, loader, len(labels))
    return overall["f1"]


@pytest.mark.slow
@pytest.mark.ci
def test_ddp_on_two_processes_logs_one_run_and_resumes_after_sigkill(tmp_path: Path) -> None:
    started = time.monotonic()
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    prepare_data(tmp_path)
    db = tmp_path / "mlflow.db"
    command = [*DDP, f"logger.tracking_uri=sqlite:///{db}"]
    prepared = time.monotonic()

    # Killed with SIGKILL, both ranks at once, once a checkpoint exists and MLflow holds steps
    # past it (the rerun recomputes those and must not log them twice).
    victim = start(tmp_path, "finetune", *command)
    folder = tmp_path / "outputs/checkpoints/finetune"
    deadline, saved = time.monotonic() + 1200, {}
    while not logged_past_checkpoint(db, folder, saved):
        assert victim.poll() is None, f"finished before it could be killed: {victim.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint after 1200 s"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("lmforge-finetune").experiment_id
    (killed,) = client.search_runs([experiment])  # rank 1 opened no run
    assert killed.info.status == "RUNNING"
    assert json.loads((folder / "resume.json").read_text())["mlflow_run_id"] == killed.info.run_id
    # One set of checkpoints: rank 0's (last-v1 is the best-checkpoint callback's own last).
    assert {p.name for p in folder.iterdir()} <= {"last.ckpt", "last-v1.ckpt", "best.ckpt", "resume.json"}
    assert not (tmp_path / "metrics/finetune.json").exists()

    # The same command resumes it, into the same run.
    out = finish(start(tmp_path, "finetune", *command))
    assert out.count(f"resuming the interrupted run (MLflow run {killed.info.run_id}) from") == 1
    runs = client.search_runs([experiment])
    assert [r.info.run_id for r in runs] == [killed.info.run_id], "a second run was created"
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert not folder.exists(), "a finished run left checkpoints to resume"

    # Each step's metrics logged once, by one process.
    for key in run.data.metrics:
        if key.startswith("system/"):  # sampled by time, not by step
            continue
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {sorted(steps)}"
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/f1")]
    assert len(val_steps) == 2  # validated twice in the epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.ckpt", "checkpoints/last.ckpt"}

    # Validation under DDP (each rank a share, synced by torchmetrics) scores the best model as
    # one process scoring the saved model on the whole split does.
    best = run.data.metrics["best_val_f1"]
    assert json.loads((tmp_path / "metrics/finetune.json").read_text())["best_val_f1"] == best
    assert score_in_one_process(tmp_path) == pytest.approx(best, abs=1e-6)
    print(
        f"ddp test: data {prepared - started:.0f} s, train + kill + resume "
        f"{time.monotonic() - prepared:.0f} s"
    )
