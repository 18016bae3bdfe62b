"""Hydra multirun sweeps as nested MLflow runs: one parent run per sweep, one child per job.

Configured in ``conf/config.yaml`` under ``hydra.callbacks``, so every ``-m`` run gets it, with
any launcher (basic, joblib) and sweeper (basic, Optuna):

- ``on_multirun_start`` (the launching process, before any job) creates the parent run in the
  stage's experiment and writes its id to ``<sweep dir>/mlflow_parent.json``;
- ``on_job_start`` (the process that runs the job: the same one, or a joblib worker) reads that
  file and exports :data:`lmforge.tracking.runs.PARENT_ENV` and :data:`~lmforge.tracking.runs.RUN_NAME_ENV`,
  so the stage's ``stage_run`` opens a child run named after the job's own overrides, and
  :data:`~lmforge.tracking.runs.JOB_DIR_ENV`, so the job writes its model, metrics and plots into its
  own folder (:func:`lmforge.tracking.runs.job_outputs`);
- ``on_multirun_end`` logs the best child's objective (its task's, e.g. ``best_val_f1``) on the
  parent and closes it.

A file in the sweep folder rather than an environment variable set once: joblib reuses worker
processes across sweeps, and a remote launcher shares the folder but not the environment.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lmforge.core.errors import UserError
from lmforge.tracking.runs import JOB_DIR_ENV, PARENT_ENV, RUN_NAME_ENV
from lmforge.tracking.safety import check_store

log = logging.getLogger("lmforge")

PARENT_FILE = "mlflow_parent.json"
SWEEP_TAG = "lmforge.sweep"
BEST_RUN_TAG = "lmforge.best_run_id"
# Stages that open an MLflow run; a sweep of another stage gets no parent run.
TRACKED_STAGES = ("pretrain", "finetune", "evaluate")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _task_config(config: DictConfig) -> Any:
    """The job's config without Hydra's own node, validated like a stage's."""
    from lmforge.core.config import validate

    return validate(OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"]))


class MlflowSweep(Callback):
    """The Hydra callback (see the module docstring)."""

    def __init__(self) -> None:
        self.parent: dict[str, Any] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        stage = str(config.hydra.job.name)
        if stage not in TRACKED_STAGES:
            return
        from mlflow import MlflowClient

        from lmforge.tracking.runs import STAGE_TAG, ensure_experiment, git_state, tracking_uri

        cfg = _task_config(config)
        uri = tracking_uri(cfg)
        try:
            check_store(uri)  # a wrong password fails here, in one line, before any job runs
        except UserError as exc:
            # Raised in a Hydra callback, outside the stage's error handling: report it alike.
            print(f"lmforge: error: {exc}", file=sys.stderr)
            sys.exit(2)
        import mlflow

        mlflow.set_tracking_uri(uri)
        experiment_id = ensure_experiment(f"{cfg.logger.experiment}-{stage}")
        # Overrides given without a sweep (`experiment=tiny`) are the same for every job: a child
        # is named after the others only, the ones that tell it from its siblings.
        from hydra.core.override_parser.overrides_parser import OverridesParser

        given = list(config.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(given)
        fixed = sorted({o.get_key_element() for o in parsed if not o.is_sweep_override()})
        swept = [str(o.input_line) for o in parsed if o.is_sweep_override()]
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default="basic"))
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="basic"))
        search = OmegaConf.select(config, "hydra.sweeper.params")
        if search:
            params: dict[str, Any] = OmegaConf.to_container(search)  # type: ignore[assignment]
            swept += [f"{k}={v}" for k, v in params.items()]
        client = MlflowClient(uri)
        run = client.create_run(
            experiment_id,
            run_name=f"sweep {' '.join(swept) or 'of ' + stage}",
            tags={
                STAGE_TAG: stage,
                SWEEP_TAG: "parent",
                **git_state(),
                "lmforge.sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
                "lmforge.sweeper": sweeper.rsplit(".", 1)[-1],
                "lmforge.launcher": launcher.rsplit(".", 1)[-1],
                **dict.fromkeys(cfg.tags, "true"),  # the user's labels (tags=[a,b]), as on its jobs
            },
        )
        client.log_param(run.info.run_id, "sweep.overrides", " ".join(given)[:6000])
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.parent = {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "tracking_uri": uri,
            "fixed": fixed,
        }
        (sweep_dir / PARENT_FILE).write_text(json.dumps(self.parent, indent=1))
        # A job that fails ends the process before on_multirun_end: mark the parent FAILED then.
        atexit.register(self._close, "FAILED")
        print(f"sweep: MLflow parent run {run.info.run_id} in experiment {cfg.logger.experiment}-{stage}")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        path = Path(config.hydra.sweep.dir) / PARENT_FILE
        if not path.is_file():
            return
        parent = json.loads(path.read_text())
        mine = [o for o in config.hydra.overrides.task if _override_key(o) not in parent["fixed"]]
        os.environ[PARENT_ENV] = parent["run_id"]
        os.environ[RUN_NAME_ENV] = f"#{config.hydra.job.num} {' '.join(mine)}".strip()
        os.environ[JOB_DIR_ENV] = str(Path(config.hydra.runtime.output_dir).resolve())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(RUN_NAME_ENV, None)
        os.environ.pop(JOB_DIR_ENV, None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient(self.parent["tracking_uri"])
        children = client.search_runs(
            [self.parent["experiment_id"]],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent['run_id']}'",
        )
        from lmforge.tracking.runs import ranked, run_objective

        scored = ranked(children)
        run_id = self.parent["run_id"]
        client.log_metric(run_id, "sweep/jobs", len(children))
        client.log_metric(run_id, "sweep/finished", sum(c.info.status == "FINISHED" for c in children))
        if scored:
            best = scored[0]
            objective = run_objective(best)[0]
            client.log_metric(run_id, objective, best.data.metrics[objective])
            client.set_tag(run_id, BEST_RUN_TAG, best.info.run_id)
            print(
                f"sweep: best {objective} {best.data.metrics[objective]:.4f} in run "
                f"{best.info.run_id} ({best.info.run_name}) of {len(children)}"
            )
        self._close("FINISHED")

    def _close(self, status: str) -> None:
        if self.parent is None:
            return
        from mlflow import MlflowClient

        parent, self.parent = self.parent, None
        MlflowClient(parent["tracking_uri"]).set_terminated(parent["run_id"], status=status)
