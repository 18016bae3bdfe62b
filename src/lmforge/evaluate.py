"""Stage 6, evaluate: score the finetuned model on the test split with torchmetrics.

The model folder names its task (:mod:`lmforge.tasks`), which computes the figures: for a
classifier, accuracy, macro and per-class precision/recall/F1, a confusion matrix
(``plots/eval/confusion.{csv,png}``), per-class F1 bars (``f1.{csv,png}``), the examples it got
wrong (``errors.csv``, and the MLflow table ``test_errors.json``) and, for two classes, a
precision-recall curve (``pr.{csv,png}``); a tagger's alike, per tag; for a text-to-text
model, SacreBLEU, chrF, ROUGE, exact match and target perplexity, with a sample of predictions
(``plots/eval/samples.csv``). Writes
``metrics/eval.json`` and logs everything to an MLflow run. The stage owns ``plots/eval/`` whole:
it is written aside and replaces the previous one with ``metrics/eval.json`` at the end, so no
figure of another run or task stays beside them. With ``eval.file=PATH`` it scores any
labelled file instead (same readers and options as ``data.source``) and writes ``eval.output``
(default ``metrics/eval_file.json``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.io import load_json, output_file, write_json

if TYPE_CHECKING:
    from lmforge.tasks.base import Task


def run(cfg: Config) -> None:
    from lmforge.data.pairing import check_model_folder
    from lmforge.lit.workspace import check_model_shards, shard_meta
    from lmforge.tasks.base import finetuned_task

    folder = Path(cfg.paths.finetuned)
    if cfg.eval.file and cfg.eval.output:
        output_file(cfg.eval.output, "eval.output")
    task = finetuned_task(folder)
    # The model's tokenizer copy is the one it was trained with, and (on the test split) the
    # one that encoded the shards.
    check_model_folder(folder, "finetune")
    if not cfg.eval.file:
        check_model_shards(folder, shard_meta(cfg), cfg, "finetune")
    if cfg.eval.file:
        path = Path(cfg.eval.file)
        result = task.evaluate_file(cfg, folder, path)
        output = Path(cfg.eval.output or Path(cfg.paths.metrics) / "eval_file.json")
        write_json(output, result["report"])
        print(f"evaluate: {result['summary']} -> {output}")
        return

    from lmforge.tracking.runs import pipeline_id, stage_run

    # The stage owns plots/eval/ whole: the task writes a fresh one aside (its plots folder is
    # ``<staging>/eval``), which replaces the previous one with metrics/eval.json at the end, so
    # no figure of another run or task (a classifier's confusion matrix) stays beside them.
    plots = Path(cfg.paths.plots)
    metrics_path = Path(cfg.paths.metrics) / "eval.json"
    for stale in plots.glob(".evaluate.tmp-*"):  # of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = plots / f".evaluate.tmp-{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        result = task.evaluate(replace(cfg, paths=replace(cfg.paths, plots=str(staging))), folder)
        standing = baseline_standing(cfg, task, result["report"])
        if standing is not None:
            result["report"]["standing"] = standing
        write_json(staging / "eval.json", result["report"])
        upstream = load_json(folder / "meta.json", "finetune")
        with stage_run(
            cfg,
            "evaluate",
            pipeline_id(folder / "meta.json"),
            extra_tags={"lmforge.finetune_run_id": upstream["mlflow_run_id"], "lmforge.task": task.name},
        ):
            import mlflow

            mlflow.log_metrics({**result["mlflow_metrics"], **standing_metrics(standing)})
            if standing is not None:
                mlflow.set_tag("lmforge.baseline_wins", str(standing["baseline_wins"]).lower())
            for path in (staging / "eval.json", *result["artifacts"]):
                mlflow.log_artifact(str(path))
            for name, table in result.get("tables", {}).items():
                mlflow.log_table(table, artifact_file=name)
        (staging / "eval").mkdir(exist_ok=True)
        swap_in(staging / "eval", plots / "eval")
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / "eval.json", metrics_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"evaluate: {result['summary']} -> {metrics_path}")


def baseline_standing(cfg: Config, task: Task, report: dict) -> dict | None:
    """The task's :meth:`~lmforge.tasks.base.Task.standing` of the test figures against
    ``metrics/baselines.json``; None, with one line saying so, where the baselines stage has not
    written it (or the task has no figure to set against them)."""
    if task.headline_metric is None:
        return None
    path = Path(cfg.paths.metrics) / "baselines.json"
    if not path.is_file():
        print(
            f"evaluate: {path} is missing, so the standing against the baselines is skipped; "
            "run the baselines stage first (dvc repro baselines)"
        )
        return None
    return task.standing(report, load_json(path, "baselines"))


def standing_metrics(standing: dict | None) -> dict[str, float]:
    """``test_<metric>_vs_<baseline>`` for each baseline and ``test_<metric>_vs_best_baseline``:
    the model's figure minus the baseline's, in the metric's units."""
    if standing is None:
        return {}
    prefix = f"test_{standing['metric']}_vs"
    metrics = {f"{prefix}_{name}": value for name, value in standing["vs"].items()}
    metrics[f"{prefix}_best_baseline"] = standing["vs_best"]
    return metrics


def swap_in(new: Path, target: Path) -> None:
    """Replace the folder ``target`` with ``new`` (two renames; the old one is then removed)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


main = stage(run)

if __name__ == "__main__":
    main()
