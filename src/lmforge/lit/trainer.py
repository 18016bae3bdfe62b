"""Build a Lightning Trainer from ``trainer.*`` config, with MLflow attached to our own run."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import lightning as L
import torch

from lmforge.core.config import Config


def quiet_lightning() -> None:
    """Lightning's start-up banners (accelerators found, product tips) drown the stage output.

    Lightning sets its loggers to INFO when imported, so this runs after the import. A stage run
    with ``--verbose`` (``$LMFORGE_VERBOSE``, see lmforge.core.cli) keeps them.
    """
    if os.environ.get("LMFORGE_VERBOSE") == "1":
        return
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Several checkpoint callbacks (periodic, best) share one folder on purpose (lit/resume.py).
    warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")


def set_threads(cfg: Config) -> None:
    """``trainer.num_threads``, else ``$OMP_NUM_THREADS`` as PyTorch itself reads it, else every
    CPU (PyTorch's own default counts physical cores, half of a 2-vCPU machine)."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    threads = cfg.trainer.num_threads or (int(omp) if omp.isdigit() and int(omp) > 0 else 0)
    torch.set_num_threads(threads or os.cpu_count() or 1)


def build_trainer(
    cfg: Config, run_id: str | None, tracking_uri: str, callbacks: list | None = None, **overrides: Any
) -> L.Trainer:
    from lmforge.lit.callbacks import (
        AtomicCheckpointIO,
        InterruptAtBatchEnd,
        LearningRate,
        ResumableMLFlowLogger,
    )

    quiet_lightning()

    # Lightning's MLFlowLogger defaults to a file store, which MLflow 3.13+ rejects: always hand
    # it the run we opened ourselves, in the store we resolved (none on ranks other than 0,
    # which never log). This one also skips steps a resumed run already holds.
    logger = ResumableMLFlowLogger(tracking_uri=tracking_uri, run_id=run_id)
    options: dict[str, Any] = {
        "accelerator": cfg.trainer.accelerator,
        "devices": cfg.trainer.devices,
        "num_nodes": cfg.trainer.num_nodes,
        "strategy": cfg.trainer.strategy,
        # The stages' samplers shard themselves under DDP (lmforge.lit.distributed): Lightning's
        # would pad validation with repeated samples and lose a resumed epoch's position.
        "use_distributed_sampler": False,
        "precision": cfg.trainer.precision,
        "deterministic": cfg.trainer.deterministic,
        "log_every_n_steps": cfg.trainer.log_every_n_steps,
        "fast_dev_run": cfg.trainer.fast_dev_run,
        "logger": logger,
        # train/lr for every training stage (pretrain and finetune alike).
        "callbacks": [*(callbacks or []), LearningRate(), InterruptAtBatchEnd()],
        "enable_model_summary": os.environ.get("LMFORGE_VERBOSE") == "1",
        "default_root_dir": "outputs/lightning",
        # Checkpoints written by rename (never half-written) and loaded with weights_only=True.
        "plugins": [AtomicCheckpointIO()],
    }
    options.update(overrides)
    trainer = L.Trainer(**options)
    check_launch(trainer)
    return trainer


def check_launch(trainer: L.Trainer) -> None:
    """Lightning starts ranks 1..N-1 as copies of the command line; in a ``-m`` sweep that line
    is the whole sweep, so each copy would start a sweep of its own."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    from lmforge.core.errors import UserError

    launcher = trainer.strategy.launcher
    if (
        isinstance(launcher, _SubprocessScriptLauncher)
        and not launcher.cluster_environment.creates_processes_externally
        and HydraConfig.initialized()
        and HydraConfig.get().mode == RunMode.MULTIRUN
    ):
        raise UserError(
            f"trainer.strategy={trainer.strategy.__class__.__name__} with several devices cannot run "
            "inside a -m sweep started by one process; run each job as its own command, or sweep "
            "on SLURM with hydra.launcher.tasks_per_node equal to trainer.devices (docs/scaling.md)"
        )
