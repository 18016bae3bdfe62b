"""The Lightning loop every training stage (pretrain, finetune) sets up alike: seeding, resumable
samplers and loaders, the resume plan, the stage's MLflow run, the callbacks, the trainer and
``fit``, and what only the leader (global rank 0) does. A stage's ``run`` keeps what is its own:
its data and module, what it logs on a new run, its extra callbacks, and what it saves.

Used in this order, which is the order of the global RNG stream (a resumed or repeated run must
draw the same numbers, so the published figures do not move)::

    seed(cfg)                                         # the global RNG, before anything draws
    train_loader, val_loader = loaders(cfg, ...)      # own generators: draw nothing global
    module = ...                                      # the stage's model: its initial weights
    with fit_run(cfg, "finetune", ...) as training:   # resume plan, MLflow run (leader only)
        if training.new_run:
            mlflow.log_params(...)                    # a resumed run has them already
        trainer = training.fit(module, train_loader, val_loader, ...)
        if not training.leader:
            return                                    # the other ranks train, then leave
        ...                                           # metrics and outputs: the leader alone

On leaving the ``with`` block without an error the checkpoints folder is cleared: the stage wrote
its outputs, nothing is left to resume (:mod:`lmforge.lit.resume`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from lmforge.core.config import Config
from lmforge.lit.callbacks import LoaderWait, StopOnNonFiniteLoss
from lmforge.lit.distributed import EvalSampler, SameCheckpoint, ShardSamplers, end_process_group
from lmforge.lit.resume import ResumableSampler, ResumePlan, TrainingState, periodic_checkpoints, plan_resume


def seed(cfg: Config) -> None:
    """Seed every global RNG (Python, NumPy, torch, loader workers) and set the thread count."""
    from lmforge.lit.trainer import set_threads

    L.seed_everything(cfg.seed, workers=True)
    set_threads(cfg)


def loaders(
    cfg: Config,
    train: Dataset,
    val: Dataset,
    *,
    batch_size: int,
    val_batch_size: int | None = None,
    collate: Any = None,
    lengths: Sequence[int] | None = None,
    drop_last: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """The training loader, shuffled by a :class:`ResumableSampler` that can resume mid-epoch
    (``lengths``: batches of texts of similar length), and the validation loader, in order, read
    by an :class:`EvalSampler` (under DDP each rank scores its own share, nothing twice).

    Every loader has its own generator, so creating an iterator never draws from the global RNG
    (which a resumed run restores for dropout alone, :class:`TrainingState`).
    """
    shared = {
        "collate_fn": collate,
        "num_workers": cfg.trainer.num_workers,
        "pin_memory": cfg.trainer.pin_memory,
    }
    train_loader = DataLoader(
        train,
        batch_size=batch_size,
        sampler=ResumableSampler(len(train), cfg.seed, lengths=lengths, batch_size=batch_size),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(cfg.seed),
        **shared,
    )
    val_loader = DataLoader(
        val,
        batch_size=val_batch_size or batch_size,
        sampler=EvalSampler(len(val)),
        generator=torch.Generator().manual_seed(cfg.seed),
        **shared,
    )
    return train_loader, val_loader


@dataclass
class FitRun:
    """One training stage's run: its resume plan, its pipeline id and (on the leader) the MLflow
    run it logs to."""

    cfg: Config
    stage: str
    plan: ResumePlan
    pipeline: str
    run: Any = None  # mlflow's ActiveRun; None on the ranks other than 0
    # The leader opened a new MLflow run (not a resumed one): the stage logs its params now.
    new_run: bool = False
    loader_wait: LoaderWait = field(default_factory=LoaderWait)

    @property
    def leader(self) -> bool:
        return self.plan.leader

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    def fit(
        self,
        module: L.LightningModule,
        train_loader: DataLoader,
        val_loader: DataLoader,
        *,
        curve: Path,
        per_step_curve: bool,
        lr_key: str,
        callbacks: Sequence[Callback] = (),
        ema_decay: float | None = None,
        **trainer_options: Any,
    ) -> L.Trainer:
        """Train ``module`` from where the plan resumes (every rank), and return the trainer once
        fit has ended and the process group is gone (rank 0 goes on alone).

        The stage's own ``callbacks`` (the best checkpoint, early stopping) run after the
        samplers' and the training state's, ``curve`` is the CSV of the loss curve
        (:class:`lmforge.tracking.curves.CurveWriter`), ``lr_key`` the option a non-finite loss points
        to, ``ema_decay`` an exponential moving average of the weights, swapped in for
        validation. ``trainer_options`` go to :func:`lmforge.lit.trainer.build_trainer`.
        """
        # Looked up at the call: tests stand in for it (tests/test_resume.py).
        from lmforge.lit import trainer as lit_trainer
        from lmforge.tracking.curves import CurveWriter
        from lmforge.tracking.runs import tracking_uri

        plan, sampler, val_sampler = self.plan, train_loader.sampler, val_loader.sampler
        # Lightning runs ModelCheckpoint callbacks after all others, in their order here.
        every = [
            ShardSamplers(sampler, val_sampler),
            SameCheckpoint(plan.ckpt_path),
            TrainingState(sampler, train_loader.batch_size),
            *callbacks,
            self.loader_wait,
            *periodic_checkpoints(self.cfg, plan.folder),
            StopOnNonFiniteLoss(self.stage, plan.folder, lr_key),
            CurveWriter(curve, per_step=per_step_curve),
        ]
        if ema_decay is not None:
            from lightning.pytorch.callbacks import WeightAveraging
            from torch.optim.swa_utils import get_ema_avg_fn

            # Swapped in for validation, so the best checkpoint holds (and scores) the average.
            every.append(WeightAveraging(avg_fn=get_ema_avg_fn(ema_decay)))
        every += configured_callbacks(self.cfg)  # conf/callbacks/: added to the stage's own
        # Without a checkpoint callback of ours Lightning would add its own.
        checkpointing = any(isinstance(c, ModelCheckpoint) for c in every)
        options = {**trainer_options, **debug_options(self.cfg, self.stage, trainer_options)}
        trainer = lit_trainer.build_trainer(
            self.cfg,
            self.run_id,
            tracking_uri(self.cfg),
            callbacks=every,
            enable_checkpointing=checkpointing,
            **options,
        )
        trainer.fit(module, train_loader, val_loader, ckpt_path=plan.ckpt_path, weights_only=True)
        end_process_group()
        if "profiler" in options and self.leader:
            log_profile(Path(PROFILER_DIR), self.stage)
        return trainer


def configured_callbacks(cfg: Config) -> list[Callback]:
    """The callbacks of ``cfg.callbacks`` (conf/callbacks/), built by ``hydra.utils.instantiate``;
    one that cannot be built is a one-line error naming its key."""
    from hydra.utils import instantiate

    from lmforge.core.errors import UserError

    built = []
    for name, spec in cfg.callbacks.items():
        if spec is None:
            continue
        try:
            callback = instantiate(spec)
        except Exception as exc:
            cause = exc.__cause__ or exc
            reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise UserError(
                f"config key 'callbacks.{name}': cannot build {spec['_target_']}: {reason}"
            ) from None
        if not isinstance(callback, Callback):
            raise UserError(f"config key 'callbacks.{name}': {spec['_target_']} is no Lightning Callback")
        built.append(callback)
    return built


# Where trainer.profiler writes its report: <stage>-profile files, logged with the stage's run.
PROFILER_DIR = "outputs/profiler"


def debug_options(cfg: Config, stage: str, stage_options: dict[str, Any]) -> dict[str, Any]:
    """The trainer.* debugging keys that are set (conf/debug/), over the stage's own options (a
    stage's limit_val_batches, pretrain's); an int val_check_interval is held within the
    limited epoch."""
    t = cfg.trainer
    options: dict[str, Any] = {}
    for key in ("limit_train_batches", "limit_val_batches", "overfit_batches"):
        if getattr(t, key) is not None:
            options[key] = getattr(t, key)
    interval = stage_options.get("val_check_interval")
    batches = options.get("overfit_batches") or options.get("limit_train_batches")
    if type(interval) is int and type(batches) is int and batches > 0:
        options["val_check_interval"] = min(interval, batches)
    if t.profiler is not None:
        from lightning.pytorch.profilers import AdvancedProfiler, SimpleProfiler

        kind = SimpleProfiler if t.profiler == "simple" else AdvancedProfiler
        options["profiler"] = kind(dirpath=PROFILER_DIR, filename=f"{stage}-profile")
    return options


def log_profile(folder: Path, stage: str) -> None:
    """Log the profiler's report (``fit-<stage>-profile.txt``) with the active run, and say where."""
    import mlflow

    for report in sorted(folder.glob(f"*{stage}-profile*")):
        if mlflow.active_run() is not None:
            mlflow.log_artifact(str(report), "profiler")
        print(f"{stage}: profiler report {report}")


@contextmanager
def fit_run(
    cfg: Config, stage: str, pipeline: str | None = None, tags: dict[str, str] | None = None
) -> Iterator[FitRun]:
    """Decide what ``stage`` resumes, open (or continue) its MLflow run on the leader, record it
    for a rerun, and clear the checkpoints once the block ends without an error.

    ``pipeline``: the pipeline id to group the run under (finetune: its pretraining's); without
    it, the one the interrupted run recorded, else a new one. ``tags``: tags of a new run.
    Under DDP only rank 0 opens the MLflow run and writes anything (:mod:`lmforge.lit.distributed`).
    """
    from lmforge.tracking.runs import pipeline_id, stage_run, tracking_uri

    plan = plan_resume(cfg, stage)
    plan.drop_missing_run(tracking_uri(cfg))
    if pipeline is None:
        pipeline = plan.pipeline_id or pipeline_id()
    tracked = (
        stage_run(cfg, stage, pipeline, extra_tags=tags, run_id=plan.run_id) if plan.leader else nullcontext()
    )
    with tracked as run:
        this = FitRun(cfg, stage, plan, pipeline, run, new_run=plan.leader and plan.run_id is None)
        if plan.leader:
            plan.record(this.run_id, pipeline)
        yield this
    plan.clear()
