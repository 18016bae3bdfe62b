"""The last stage: a one-screen summary of what the pipeline produced and where to look."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.io import atomic_file
from lmforge.core.task_registry import get_task


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def summary(cfg: Config) -> str:
    from lmforge.tracking.runs import tracking_uri
    from lmforge.tracking.ui import finetune_runs_link, is_server

    metrics = Path(cfg.paths.metrics)
    pretrain, finetune = _load(metrics / "pretrain.json"), _load(metrics / "finetune.json")
    evaluation, baselines = _load(metrics / "eval.json"), _load(metrics / "baselines.json")
    cleaning = _load(Path(cfg.paths.prepared) / "cleaning.json")
    lines = ["", "=" * 72, "lmforge pipeline summary", "=" * 72]
    if cleaning:
        lines.append(
            f"data      {cleaning['input_rows']} rows -> {cleaning['kept']} kept "
            f"(dropped {cleaning['dropped']}); splits {cleaning['per_split']}"
        )
    if pretrain.get("enabled") is False:
        lines.append("pretrain  disabled")
    elif pretrain:
        if "val_next_token_accuracy" in pretrain:
            accuracy = f"next-token accuracy {pretrain['val_next_token_accuracy']:.3f}"
        else:
            accuracy = f"MLM accuracy {pretrain['val_mlm_accuracy']:.3f}"
        lines.append(f"pretrain  {pretrain['steps']} steps, val loss {pretrain['val_loss']:.3f}, {accuracy}")
    task = get_task(cfg.task.name)
    lines += task.report_lines(finetune, evaluation, baselines)
    # The evaluate stage's standing against the baselines; outputs written before it had one
    # get it here, from the same two files by the same function.
    standing = evaluation.get("standing") or task.standing(evaluation, baselines)
    lines += task.standing_lines(standing)
    uri = tracking_uri(cfg)
    link = finetune_runs_link(uri, cfg.logger.experiment)
    lines += [
        "",
        f"metrics   {metrics}/*.json   plots: {cfg.paths.plots}/eval/ (dvc plots show)",
        f"MLflow    {uri}",
        f"          mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
    ]
    if link:
        serve = "" if is_server(uri) else "   (lmforge ui serves it)"
        lines.append(f"runs      {link}{serve}")
    lines.append("=" * 72)
    return "\n".join(lines)


def run(cfg: Config) -> None:
    text = summary(cfg)
    with atomic_file(Path("reports") / "summary.txt") as tmp:
        tmp.write_text(text + "\n")
    print(text)


main = stage(run)

if __name__ == "__main__":
    main()
