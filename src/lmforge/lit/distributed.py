"""Training in many processes (``trainer=ddp``, ``trainer=fsdp``, ``trainer.num_nodes``): which
process writes, and which samples each one reads.

Every rank runs the whole stage command: Lightning's own launcher starts ranks 1..N-1 as copies
of the command (``python -m lmforge.finetune ...`` with ``LOCAL_RANK`` set, in rank 0's Hydra
run folder); torchrun and SLURM start every rank themselves. Before ``trainer.fit`` there is no
process group yet, so :func:`is_leader` reads the rank from the launcher's environment: the
leader (global rank 0) alone opens the MLflow run, decides and records what a rerun resumes, and
writes checkpoints and stage outputs; the other ranks read the same resume files, never change
them, train, and leave.

Samplers: Lightning's own distributed sampler pads the validation split with repeated samples
(so a metric would count some twice) and would wrap the resumable training sampler without
knowing how far an interrupted epoch had gone. The stages hand Lightning samplers that shard
themselves once the ranks are known (:class:`ShardSamplers`), and turn Lightning's off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Sampler

from lmforge.core.errors import UserError

# Set by the launchers: torchrun (RANK), SLURM's srun (SLURM_PROCID), Lightning's own launcher
# (LOCAL_RANK for the copies it starts on a node, NODE_RANK per node, given by the user).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def is_leader() -> bool:
    """Whether this process is global rank 0 (the only one, when nothing launched others)."""
    return all(int(os.environ.get(name) or 0) == 0 for name in RANK_VARIABLES)


class Shardable(Protocol):
    def shard(self, world_size: int, rank: int) -> None: ...


class EvalSampler(Sampler[int]):
    """In order; under DDP rank r reads samples r, r + N, r + 2N, ... and nothing twice.

    Lightning's ``UnrepeatedDistributedSampler`` does the same but needs the ranks when it is
    built, before the process group exists; this one learns them in :meth:`shard`. Ranks may get
    one sample more or fewer: validation has no gradient to average, and torchmetrics sums the
    counts across ranks, so figures equal those of one process.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.world_size, self.rank = 1, 0

    def shard(self, world_size: int, rank: int) -> None:
        self.world_size, self.rank = world_size, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class ShardSamplers(Callback):
    """Tells the stage's samplers the world size and this process's rank once the process group
    is up (Lightning's ``setup`` hook runs before any loader is read or checkpoint restored), and
    makes them whole again after fit, when rank 0 scores the full validation split alone."""

    def __init__(self, *samplers: Shardable) -> None:
        self.samplers = samplers

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sampler in self.samplers:
            sampler.shard(trainer.world_size, trainer.global_rank)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sampler in self.samplers:
            sampler.shard(1, 0)


def any_rank(trainer: L.Trainer, flag: bool) -> bool:
    """``flag`` on any rank (one all-reduce under DDP; the flag itself in one process), so every
    rank takes the same branch and none waits forever in a collective the others left."""
    if trainer.world_size == 1:
        return flag
    return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))


class SameCheckpoint(Callback):
    """Stops every rank, before training, when the ranks would resume from different
    checkpoints (they decide from the same files, :func:`lmforge.lit.resume.plan_resume`; a
    checkpoint folder not shared between nodes breaks that)."""

    def __init__(self, ckpt_path: Path | None) -> None:
        self.ckpt_path = str(ckpt_path) if ckpt_path else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size == 1:
            return
        leaders = trainer.strategy.broadcast(self.ckpt_path)
        if any_rank(trainer, leaders != self.ckpt_path):
            raise UserError(
                f"rank {trainer.global_rank} resumes from {self.ckpt_path or 'the start'} but rank 0 "
                f"from {leaders or 'the start'}; put paths.checkpoints on a folder every node shares"
            )


def end_process_group() -> None:
    """After ``trainer.fit``: rank 0 goes on alone (best checkpoint, scoring, outputs), where
    torchmetrics would otherwise wait to sync with ranks that have left."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
