"""Stage 6, evaluate: score the finetuned model on the test split with torchmetrics.

The model folder names its task (:mod:`lmforge.tasks`), which computes the figures: for a
classifier, accuracy, macro and per-class precision/recall/F1 and a confusion matrix
(``plots/eval/confusion.{csv,png}``); for a text-to-text model, SacreBLEU, chrF, ROUGE, exact
match and target perplexity, with a sample of predictions (``plots/eval/samples.csv``). Writes
``metrics/eval.json`` and logs everything to an MLflow run. With ``eval.file=PATH`` it scores any
labelled file instead (same readers and options as ``data.source``) and writes ``eval.output``
(default ``metrics/eval_file.json``).
"""

from __future__ import annotations

from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.io import load_json, output_file, write_json


def run(cfg: Config) -> None:
    from lmforge.tasks.base import finetuned_task

    folder = Path(cfg.paths.finetuned)
    if cfg.eval.file and cfg.eval.output:
        output_file(cfg.eval.output, "eval.output")
    task = finetuned_task(folder)
    if cfg.eval.file:
        path = Path(cfg.eval.file)
        result = task.evaluate_file(cfg, folder, path)
        output = Path(cfg.eval.output or Path(cfg.paths.metrics) / "eval_file.json")
        write_json(output, result["report"])
        print(f"evaluate: {result['summary']} -> {output}")
        return

    from lmforge.tracking.runs import pipeline_id, stage_run

    result = task.evaluate(cfg, folder)
    metrics_path = Path(cfg.paths.metrics) / "eval.json"
    write_json(metrics_path, result["report"])
    upstream = load_json(folder / "meta.json", "finetune")
    with stage_run(
        cfg,
        "evaluate",
        pipeline_id(folder / "meta.json"),
        extra_tags={"lmforge.finetune_run_id": upstream["mlflow_run_id"], "lmforge.task": task.name},
    ):
        import mlflow

        mlflow.log_metrics(result["mlflow_metrics"])
        for path in (metrics_path, *result["artifacts"]):
            mlflow.log_artifact(str(path))
        for name, table in result.get("tables", {}).items():
            mlflow.log_table(table, artifact_file=name)
    print(f"evaluate: {result['summary']} -> {metrics_path}")


main = stage(run)

if __name__ == "__main__":
    main()
