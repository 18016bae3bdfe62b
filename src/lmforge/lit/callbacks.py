"""Callbacks of the training stages: non-finite losses, atomic checkpoints, MLflow logging that
survives a resume, and how long training waits for its data loader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from lmforge.core import interrupts
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_file, torch_load

# What a damaged checkpoint's error says to do (the stage's command line is the user's own).
START_AFRESH = "run the same command with resume=false to start afresh (this discards the checkpoint)"


class StopOnNonFiniteLoss(Callback):
    """Stop at the first NaN or infinite training loss, before it reaches the weights.

    Checked before the backward pass, so no optimizer step (and no checkpoint) ever holds a
    poisoned model: the last checkpoint stays the last good one.
    """

    def __init__(self, stage: str, folder: Path, lr_key: str) -> None:
        self.stage = stage
        self.folder = Path(folder)
        self.lr_key = lr_key

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        from lmforge.lit.distributed import any_rank

        finite = bool(torch.isfinite(loss.detach()).all())
        # Under DDP every rank stops together, or the others would wait for it forever.
        if not any_rank(trainer, not finite):
            return
        value = "non-finite on another rank" if finite else loss.item()
        last = self.folder / "last.ckpt"
        kept = (
            f"the last good checkpoint is kept in {last}"
            if last.is_file()
            else "no checkpoint had been saved yet"
        )
        raise UserError(
            f"{self.stage}: the training loss became {value} after {trainer.global_step} "
            f"steps (epoch {trainer.current_epoch}); {kept}; lower {self.lr_key} or check the data"
        )


class InterruptAtBatchEnd(Callback):
    """While training, Ctrl-C/SIGTERM wait for the end of the current batch (see
    :mod:`lmforge.core.interrupts`): never inside an MLflow write or a checkpoint save."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interrupts.enter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        from lmforge.lit.distributed import any_rank

        # Under DDP a signal may reach one rank (kill PID) or reach them at different batches
        # (Ctrl-C): all ranks stop at the same batch end, else the others hang in a collective.
        if trainer.world_size > 1 and any_rank(trainer, interrupts.pending() is not None):
            interrupts.stop()
        interrupts.check()

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # Ranks may hold one validation batch more or fewer: no collective here, the next
        # training batch end stops them together.
        if trainer.world_size == 1:
            interrupts.check()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        interrupts.leave()  # the exception is already unwinding; teardown is not called then

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            interrupts.leave()
            interrupts.check()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, fsynced, then renamed.

    Lightning's own save goes through an fsspec transaction that writes to the system temp
    folder and *moves* it into place: a copy, not a rename, when that is another filesystem, so a
    crash can still leave a truncated ``last.ckpt``. A rename within one folder cannot.
    Loading always uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # A truncated or corrupt checkpoint fails the same way on every rerun: say how to start
        # afresh instead of a traceback.
        return torch_load(path, "", fix=START_AFRESH, map_location=map_location or "cpu")


def logged_steps(tracking_uri: str, run_id: str) -> dict[str, int]:
    """The last step of every metric already in the run (empty for a new run)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


class ResumableMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger that logs each metric at most once per step.

    A run killed after its last checkpoint logged some steps past it; the resumed run recomputes
    them (identically, on the CPU) and would log each a second time. Lightning itself logs
    ``epoch`` twice at a step that both trains and validates. Dropping repeats keeps every
    metric history one value per step.
    """

    def __init__(self, tracking_uri: str, run_id: str | None) -> None:
        super().__init__(tracking_uri=tracking_uri, run_id=run_id)
        # Ranks other than 0 hold no run (lmforge.lit.distributed) and never log.
        self._done = logged_steps(tracking_uri, run_id) if run_id else {}

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self._done.get(k, -1)}
            if not metrics:
                return
            self._done.update(dict.fromkeys(metrics, step))
        super().log_metrics(metrics, step)


class LoaderWait(Callback):
    """Logs ``perf/loader_wait_fraction``: the share of training wall time spent between one
    batch's end and the next batch's start, i.e. waiting for the data loader (plus Lightning's
    own bookkeeping), over each ``window`` steps; ``fraction`` holds it for the whole run. Near
    0: the model is the bottleneck, as it should be; a large share calls for more
    ``trainer.num_workers`` or a cheaper dataset. On a GPU this is the host's wait: kernels still
    queued may keep the device busy meanwhile.
    """

    def __init__(self, window: int = 50) -> None:
        self.window = window
        self._end: float | None = None  # when the previous batch ended (None: no previous)
        self._start = 0.0
        self._gap: float | None = None
        self._window = [0.0, 0.0]  # waited, total over the current window
        self.waited = self.total = 0.0
        self.steps = 0

    @property
    def fraction(self) -> float | None:
        return self.waited / self.total if self.total else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = None  # an epoch boundary's gap holds validation and setup, not loading

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()
        self._gap = None if self._end is None else self._start - self._end

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._end = time.perf_counter()
        if self._gap is None:
            return
        step = self._end - self._start + self._gap
        self.waited += self._gap
        self.total += step
        self._window[0] += self._gap
        self._window[1] += step
        self.steps += 1
        if self.steps % self.window == 0:
            pl_module.log("perf/loader_wait_fraction", self._window[0] / self._window[1])
            self._window = [0.0, 0.0]


class LearningRate(Callback):
    """Logs ``train/lr``: the learning rate the optimizer steps with, at the steps Lightning logs
    (every ``trainer.log_every_n_steps``, as ``train/loss``). The largest of its parameter groups
    (with ``optim.layer_decay`` the top layers'), read before the step. Named apart from
    Lightning's ``LearningRateMonitor`` (``lr-AdamW``), which may run beside it."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        groups = [g for optimizer in trainer.optimizers for g in optimizer.param_groups]
        if groups:
            pl_module.log("train/lr", max(float(g["lr"]) for g in groups), on_step=True, batch_size=1)
