"""MLflow runs for the stages: where the store is, what every run is tagged and logged with.

The default store is ``sqlite:///<project root>/mlflow.db``. The root is ``$DVC_ROOT`` when DVC
runs a queued experiment in its temporary copy (so every run lands in the user's one store),
otherwise the project folder. ``$MLFLOW_TRACKING_URI`` or ``logger.tracking_uri`` override it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.core.config import Config, find_root
from lmforge.tracking.safety import check_store, damaged_store, redact, sqlite_damage

PIPELINE_TAG = "lmforge.pipeline_id"
DVC_EXPERIMENT_TAG = "lmforge.dvc_experiment"
STAGE_TAG = "lmforge.stage"
# Set by the sweep callback (lmforge.tracking.sweep) for the job it wraps: the stage's run becomes a child
# of the sweep's parent run and is named after the job's overrides.
PARENT_ENV = "LMFORGE_PARENT_RUN_ID"
RUN_NAME_ENV = "LMFORGE_RUN_NAME"
# Stages whose runs record CPU/memory while they train.
TRAINING_STAGES = ("pretrain", "finetune")
# The job's own folder (multirun/<date>/<time>/<job>), set by the sweep callback: see job_outputs.
JOB_DIR_ENV = "LMFORGE_JOB_DIR"
# Checkpoints too: parallel jobs resuming from one folder would take each other's checkpoints.
STAGE_OUTPUTS = {
    "pretrain": ("pretrained", "metrics", "plots", "checkpoints"),
    "finetune": ("finetuned", "metrics", "plots", "checkpoints"),
    "evaluate": ("metrics", "plots"),
}


# Finetune runs carry the figure their task is judged by (tags lmforge.objective and
# lmforge.objective_mode: best_val_f1, max for classifiers); runs from before tasks existed are
# classifiers.
OBJECTIVE = "best_val_f1"


def run_objective(run: Any) -> tuple[str, str]:
    """``(metric, "max" | "min")`` a finetune run is ranked by."""
    tags = run.data.tags
    return tags.get("lmforge.objective", OBJECTIVE), tags.get("lmforge.objective_mode", "max")


def ranked(runs: list) -> list:
    """Runs that logged their objective, best first (all runs of one task share it)."""
    scored = [r for r in runs if run_objective(r)[0] in r.data.metrics]
    if not scored:
        return []
    metric, mode = run_objective(scored[0])
    scored = [r for r in scored if run_objective(r)[0] == metric]
    return sorted(scored, key=lambda r: r.data.metrics[metric], reverse=mode == "max")


def job_outputs(cfg: Config, stage: str) -> Config:
    """In a sweep job, ``cfg`` with the stage's output paths moved into the job's own folder.

    Jobs of a parallel (joblib) sweep would otherwise overwrite each other's ``models/finetuned``
    while another job still reads it to log its model. Inputs (shards, pretrained encoder) stay
    shared. Outside a sweep, ``cfg`` unchanged.
    """
    from dataclasses import replace

    job_dir = os.environ.get(JOB_DIR_ENV)
    if not job_dir:
        return cfg
    moved = {key: str(Path(job_dir) / getattr(cfg.paths, key)) for key in STAGE_OUTPUTS.get(stage, ())}
    return replace(cfg, paths=replace(cfg.paths, **moved))


def store_root() -> Path:
    return Path(os.environ["DVC_ROOT"]).resolve() if os.environ.get("DVC_ROOT") else find_root()


def tracking_uri(cfg: Config) -> str:
    if cfg.logger.tracking_uri:
        return cfg.logger.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store_root() / 'mlflow.db'}"


def git_state(cwd: Path | None = None) -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit or "unknown", "git.dirty": str(bool(dirty)).lower()}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def pipeline_id(upstream_meta: Path | None = None) -> str:
    """One id shared by the runs of one pipeline execution.

    ``make run`` sets ``$LMFORGE_PIPELINE_ID`` for a whole ``dvc repro``; without it a stage
    inherits the id recorded by the stage it consumes, so a finetune re-run is grouped with the
    pretraining it starts from.
    """
    if os.environ.get("LMFORGE_PIPELINE_ID"):
        return os.environ["LMFORGE_PIPELINE_ID"]
    if upstream_meta is not None and upstream_meta.is_file():
        found = json.loads(upstream_meta.read_text()).get("pipeline_id")
        if found:
            return found
    return uuid.uuid4().hex[:12]


# MLflow 3's UI opens an experiment as GenAI or as model training by this tag.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# The experiment's description on the UI's home page and above its runs table.
DESCRIPTION_TAG = "mlflow.note.content"
# A saved view of the runs table (the UI's "Views" menu) is an experiment tag with this prefix.
SAVED_VIEW_PREFIX = "mlflow.sharedViewState."
KEY_METRICS_VIEW = "lmforge-key-metrics"
STAGE_DESCRIPTIONS = {
    "pretrain": "lmforge pretraining runs: self-supervised loss and throughput of the encoder.",
    "finetune": "lmforge finetuning runs: each run's best validation figure (best_val_f1 for "
    "classification, best_val_loss for text-to-text).",
    "evaluate": "lmforge evaluation runs: test accuracy and macro F1 of the finetuned model.",
}
# The runs table's columns in the "Key metrics" view, sorted by the first one (descending
# unless it is a loss).
STAGE_KEY_METRICS = {
    "pretrain": ("val/loss", "val/perplexity", "perf/tokens_per_s"),
    "finetune": ("best_val_f1", "val/f1", "val/loss"),
    "evaluate": ("test_f1", "test_accuracy"),
}


def key_metrics_view(stage: str, objective: str | None = None) -> str:
    """The "Key metrics" saved view of a stage's runs table, as MLflow 3.17's UI stores a view
    saved with its **Views > Save as new view** (a JSON envelope holding the page state).
    ``objective`` (the task's figure, e.g. ``best_val_loss``) leads the columns and the sort."""
    import time

    metrics = STAGE_KEY_METRICS.get(stage, ())
    if objective:
        metrics = (objective, *(m for m in metrics if m != objective))
    state: dict[str, Any] = {"selectedColumns": [*(f"metrics.`{m}`" for m in metrics), "attributes.`Models`"]}
    if metrics:
        state.update(orderByKey=f"metrics.`{metrics[0]}`", orderByAsc=metrics[0].endswith("loss"))
    now = int(time.time() * 1000)
    return json.dumps({"name": "Key metrics", "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def experiment_tags(name: str, objective: str | None = None) -> dict[str, str]:
    """Tags that make the MLflow UI open ``<prefix>-<stage>`` on what matters: a model-training
    experiment with a one-line description and a "Key metrics" view of its runs table."""
    stage = name.rsplit("-", 1)[-1]
    tags = {
        EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND,
        DESCRIPTION_TAG: STAGE_DESCRIPTIONS.get(stage, f"lmforge {stage} runs."),
    }
    if stage in STAGE_KEY_METRICS:
        tags[SAVED_VIEW_PREFIX + KEY_METRICS_VIEW] = key_metrics_view(stage, objective)
    return tags


def ensure_experiment(name: str, objective: str | None = None) -> str:
    """The id of experiment ``name``, created with :func:`experiment_tags` if it does not exist;
    an experiment made by an older lmforge gets the tags it lacks. The first run's task decides
    the Key metrics view (``objective``; classification's ``best_val_f1`` by default)."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        for key, value in experiment_tags(name, objective).items():
            if key not in experiment.tags:
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    # An absolute artifact folder beside the store, so runs from DVC's temporary copies keep
    # their artifacts after the copy is deleted.
    artifacts: str | None = (store_root() / "mlartifacts").as_uri()
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:"):
        artifacts = None
    try:
        return mlflow.create_experiment(
            name, artifact_location=artifacts, tags=experiment_tags(name, objective)
        )
    except mlflow.exceptions.MlflowException as exc:
        # Parallel jobs (joblib sweeps, `dvc queue start -j 2`) race to create it: the loser
        # uses the winner's.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise exc from None
        return experiment.experiment_id


@contextmanager
def stage_run(
    cfg: Config,
    stage: str,
    pipeline: str,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run for one stage, with config, git state and pipeline id; FAILED on error.

    ``run_id`` continues that run (a resumed training stage): its params, tags and config were
    logged when it was created and are left as they are.
    """
    uri = tracking_uri(cfg)
    check_store(uri)
    try:
        with _stage_run(cfg, stage, pipeline, uri, run_name, extra_tags, run_id) as run:
            yield run
    except Exception as exc:
        damage = sqlite_damage(exc) if uri.startswith("sqlite:///") else None
        if damage is None:
            raise
        path = Path(uri.removeprefix("sqlite:///"))
        raise damaged_store(redact(uri), path, damage) from None


@contextmanager
def _stage_run(
    cfg: Config,
    stage: str,
    pipeline: str,
    uri: str,
    run_name: str | None,
    extra_tags: dict[str, str] | None,
    run_id: str | None,
) -> Iterator[Any]:
    import mlflow
    from omegaconf import OmegaConf

    from lmforge.tracking.lineage import lineage_tags, log_split_inputs

    mlflow.set_tracking_uri(uri)
    system_metrics = cfg.logger.system_metrics and stage in TRAINING_STAGES
    if system_metrics and not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        # MLflow samples every 10 s by default: too coarse for runs of a minute or less.
        mlflow.set_system_metrics_sampling_interval(2)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics) as run:
            yield run
        return
    experiment_id = ensure_experiment(
        f"{cfg.logger.experiment}-{stage}", (extra_tags or {}).get("lmforge.objective")
    )
    # A DVC experiment's name (`dvc exp run -n NAME`, or the one DVC gives a queued run) names
    # its runs, so `dvc exp show` rows and MLflow runs are found by the same word.
    dvc_experiment = os.environ.get("DVC_EXP_NAME")
    tags = {
        STAGE_TAG: stage,
        PIPELINE_TAG: pipeline,
        **({DVC_EXPERIMENT_TAG: dvc_experiment} if dvc_experiment else {}),
        **git_state(),
        **lineage_tags(cfg, stage),
        **(extra_tags or {}),
        # The user's labels (tags=[a,b]): searchable as tags.a = 'true'.
        **dict.fromkeys(cfg.tags, "true"),
    }
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=os.environ.get(RUN_NAME_ENV) or run_name or f"{stage}-{dvc_experiment or pipeline}",
        parent_run_id=os.environ.get(PARENT_ENV) or None,
        tags=tags,
        log_system_metrics=system_metrics,
    ) as run:
        # Credentials and home folders never reach the store (see lmforge.tracking.safety.redact).
        resolved = redact(asdict(cfg))
        params = {k: str(v)[:6000] for k, v in flatten(resolved).items()}
        items = list(params.items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start : start + 100]))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
            mlflow.log_artifact(str(path))
        log_cleaning(cfg)
        log_split_inputs(cfg, stage)
        yield run


def log_cleaning(cfg: Config) -> None:
    """The prepare stage's counts (rows in, kept, dropped by reason) on the run that used them."""
    import mlflow

    path = Path(cfg.paths.prepared) / "cleaning.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    mlflow.log_metrics(
        {
            "data/input_rows": report["input_rows"],
            "data/kept": report["kept"],
            **{f"data/dropped_{k}": v for k, v in report["dropped"].items()},
            **{f"data/{k}_rows": v for k, v in report["per_split"].items()},
        }
    )
    mlflow.log_artifact(str(path))
