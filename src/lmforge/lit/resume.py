"""Resuming an interrupted pretrain/finetune run: same checkpoint, same data order, same MLflow run.

Each training stage keeps one stable folder, ``<paths.checkpoints>/<stage>/``, holding Lightning's
``last.ckpt`` (saved every ``trainer.checkpoint_every_n_steps`` steps and every
``trainer.checkpoint_every_minutes`` minutes) and ``resume.json`` (the MLflow run id, the pipeline
id and a hash of the config). The next run of the same command finds them and continues; a
different config hash means a different experiment, so it starts fresh and says so. The folder is
removed once the stage has written its outputs, so a finished run is never "resumed".

What makes a resumed run equal to an uninterrupted one (exactly, on the CPU with
``trainer.deterministic=true``):

- model, optimizer, LR schedule, loop counters and early-stopping state come from the checkpoint;
- MLM masks are drawn from a generator seeded by ``(seed, global_step)`` (:mod:`lmforge.lit.mlm`);
- the shuffle order comes from :class:`ResumableSampler`, seeded by ``(seed, epoch)``, which skips
  the batches the interrupted epoch had already trained on (Lightning restores its counters, not a
  plain DataLoader's position, so without this a resumed epoch would replay its first batches);
- the global RNG states (dropout) are saved with each checkpoint and restored by
  :class:`TrainingState`;
- metrics already in the MLflow run are not logged again (see
  :class:`lmforge.lit.callbacks.ResumableMLFlowLogger`), so no step appears twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import Sampler

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import write_json

RESUME_FILE = "resume.json"
LAST = "last.ckpt"


def config_hash(cfg: Config) -> str:
    """A digest of everything that defines the run; ``resume`` itself is how, not what, to run."""
    tree = asdict(cfg)
    tree.pop("resume", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ResumePlan:
    """Where a stage keeps its checkpoints, and what (if anything) it continues."""

    stage: str
    folder: Path
    config_hash: str
    run_id: str | None = None
    pipeline_id: str | None = None
    ckpt_path: Path | None = None
    # Global rank 0, which alone changes the folder (lmforge.lit.distributed); the other ranks
    # of a DDP run read the same files and so resume from the same checkpoint.
    leader: bool = True

    def record(self, run_id: str, pipeline_id: str) -> None:
        """Note the MLflow run before training starts, so even a kill before the first
        checkpoint lets the rerun continue the same run."""
        if not self.leader:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(
            self.folder / RESUME_FILE,
            {
                "stage": self.stage,
                "mlflow_run_id": run_id,
                "pipeline_id": pipeline_id,
                "config_hash": self.config_hash,
            },
        )

    def clear(self) -> None:
        """The stage finished and wrote its outputs: nothing is left to resume."""
        if self.leader:
            shutil.rmtree(self.folder, ignore_errors=True)

    def drop_missing_run(self, tracking_uri: str) -> None:
        """Start a new MLflow run when the recorded one is not in this store (e.g. mlflow.db was
        deleted); the checkpoint is still used."""
        if self.run_id is None or not self.leader:
            return
        from lmforge.tracking.safety import check_store

        check_store(tracking_uri)  # fail fast rather than through the client's retries
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            MlflowClient(tracking_uri=tracking_uri).get_run(self.run_id)
        except MlflowException:
            print(f"{self.stage}: MLflow run {self.run_id} is not in the store; logging to a new run")
            self.run_id = None


def check_checkpoint(path: Path) -> None:
    """Cheap, before anything starts: a checkpoint is a zip archive whose directory sits at its
    end, so a truncated one (a crash while copying, a full disk) is found without reading it.
    Damage further in surfaces when Lightning loads it (:class:`AtomicCheckpointIO`)."""
    import zipfile

    from lmforge.lit.callbacks import START_AFRESH

    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise UserError(f"{path} is truncated or corrupt (not a complete checkpoint archive); {START_AFRESH}")


def plan_resume(cfg: Config, stage: str) -> ResumePlan:
    """Decide whether ``stage`` continues an interrupted run, following ``cfg.resume``.

    Every rank of a DDP run decides from the same files, but only the leader changes them (and
    says what it decided). A rank that reads while the leader starts afresh sees either the old
    files (config hash differs, or resume=false: fresh), the leader's new ``resume.json``
    without a checkpoint (fresh), or nothing (fresh); checkpoints are written only once every
    rank is in ``trainer.fit``, so all ranks agree (and :class:`SameCheckpoint` checks it).
    """
    from lmforge.lit.distributed import is_leader

    folder = Path(cfg.paths.checkpoints) / stage
    leader = is_leader()
    plan = ResumePlan(stage, folder, config_hash(cfg), leader=leader)
    say = print if leader else lambda *args: None
    if cfg.resume is False:
        if folder.exists() and leader:
            print(f"{stage}: resume=false; discarding the checkpoints in {folder}")
            shutil.rmtree(folder)
        return plan
    state: dict[str, Any] = {}
    if (folder / RESUME_FILE).is_file():
        try:
            state = json.loads((folder / RESUME_FILE).read_text())
        except json.JSONDecodeError:
            say(f"{stage}: {folder / RESUME_FILE} is unreadable; starting a fresh run")
    last = folder / LAST
    if state and state.get("config_hash") == plan.config_hash:
        plan.run_id, plan.pipeline_id = state.get("mlflow_run_id"), state.get("pipeline_id")
        plan.ckpt_path = last if last.is_file() else None
        if plan.ckpt_path is not None:
            check_checkpoint(last)
        where = f"from {last}" if plan.ckpt_path else "from the start (no checkpoint was saved yet)"
        say(f"{stage}: resuming the interrupted run (MLflow run {plan.run_id}) {where}")
        return plan
    if cfg.resume is True:
        why = (
            "the config changed since the interrupted run (config hash "
            f"{state.get('config_hash')} -> {plan.config_hash})"
            if state
            else f"{folder} holds no interrupted {stage} run"
        )
        raise UserError(f"resume=true but {why}; drop resume=true to start a fresh run")
    if state:
        say(
            f"{stage}: the config changed since the interrupted run in {folder} (config hash "
            f"{state.get('config_hash')} -> {plan.config_hash}); starting a fresh run"
        )
    if folder.exists() and leader:
        shutil.rmtree(folder)
    return plan


class ResumableSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``(seed, epoch)``; after a resume, the first epoch skips
    the samples the interrupted run had consumed."""

    def __init__(self, size: int, seed: int, lengths=None, batch_size: int | None = None) -> None:
        """With ``lengths`` and ``batch_size``, each epoch's order groups texts of similar
        length into the same batch (:func:`lmforge.data.datasets.length_grouped_order`)."""
        self.size = size
        self.seed = seed
        self.lengths = lengths
        self.batch_size = batch_size
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, samples)
        self.world_size, self.rank = 1, 0

    def shard(self, world_size: int, rank: int) -> None:
        """Under DDP (:class:`lmforge.lit.distributed.ShardSamplers`): every rank draws the same
        epoch order and reads every ``world_size``-th sample of it from ``rank`` on, so each
        sample is read once per epoch across ranks. When the split does not divide by the world
        size, the first few samples of the order are read twice to even the ranks out (as in
        torch's DistributedSampler): a rank with fewer batches would stop answering the others'
        gradient all-reduce."""
        self.world_size, self.rank = world_size, rank

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start (as for DistributedSampler)."""
        self.epoch = epoch

    def skip(self, epoch: int, samples: int) -> None:
        self._skip = (epoch, samples)

    def __len__(self) -> int:
        # The full length (of this rank's share): Lightning's restored batch counter plus the
        # remaining batches then add up to one epoch, so the epoch ends where an uninterrupted
        # one would.
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.lengths is not None and self.batch_size:
            from lmforge.data.datasets import length_grouped_order

            # Grouped by the global batch (every rank's batch of one step), which the strided
            # shard below cuts into one batch per rank: each rank's batch stays one length.
            order = length_grouped_order(self.lengths, self.batch_size * self.world_size, generator)
        else:
            order = torch.randperm(self.size, generator=generator).tolist()
        if self.world_size > 1:
            order = (order + order[: (-len(order)) % self.world_size])[self.rank :: self.world_size]
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = self._skip[1]
            self._skip = None
        return iter(order[start:])


class TrainingState(Callback):
    """Saves, with each checkpoint, what Lightning does not: the position in the epoch and the
    global RNG states; restores both on resume."""

    def __init__(self, sampler: ResumableSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.epoch = 0
        self.done = 0  # batches trained in the current epoch
        self._resumed: tuple[int, int] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = trainer.current_epoch
        resumed, self._resumed = self._resumed, None
        self.done = resumed[1] if resumed and resumed[0] == self.epoch else 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Runs before ModelCheckpoint's hook (Lightning calls checkpoint callbacks last), so a
        # checkpoint taken at this step counts this batch as done.
        self.done += 1

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "epoch": self.epoch,
            "batches_done": self.done,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            # Plain lists: the checkpoint must load with torch.load(weights_only=True).
            "numpy_rng": [kind, keys.tolist(), pos, has_gauss, gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        epoch, done = int(state_dict["epoch"]), int(state_dict["batches_done"])
        self._resumed = (epoch, done)
        self.sampler.skip(epoch, done * self.batch_size)
        torch.set_rng_state(state_dict["torch_rng"])
        random.setstate(state_dict["python_rng"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy_rng"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def periodic_checkpoints(cfg: Config, folder: Path) -> list[ModelCheckpoint]:
    """``last.ckpt`` by steps and by time; Lightning allows one trigger per callback, hence two."""
    found = []
    if cfg.trainer.checkpoint_every_n_steps:
        found.append(
            ModelCheckpoint(
                dirpath=folder,
                every_n_train_steps=cfg.trainer.checkpoint_every_n_steps,
                save_top_k=0,
                save_last=True,
            )
        )
    if cfg.trainer.checkpoint_every_minutes:
        interval = timedelta(minutes=cfg.trainer.checkpoint_every_minutes)
        found.append(
            ModelCheckpoint(dirpath=folder, train_time_interval=interval, save_top_k=0, save_last=True)
        )
    return found
