"""The last stage: a one-screen summary of what the pipeline produced and where to look."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.io import atomic_file
from lmforge.text_metrics import format_scores


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def summary(cfg: Config) -> str:
    from lmforge.tracking import tracking_uri

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
    if "best_val_f1" in finetune:
        lines.append(
            f"finetune  best val macro F1 {finetune['best_val_f1']:.4f} ({finetune['epochs']} epochs)"
        )
    elif "best_val_loss" in finetune:
        lines.append(
            f"finetune  best val target loss {finetune['best_val_loss']:.4f} ({finetune['epochs']} epochs)"
        )
    if "accuracy" in evaluation:
        # Taggers are scored per word, classifiers per example.
        count = (
            f"{evaluation['words']} words" if "words" in evaluation else f"{evaluation['examples']} examples"
        )
        lines.append(
            f"test      accuracy {evaluation['accuracy']:.4f}  macro P {evaluation['precision']:.4f}"
            f"  R {evaluation['recall']:.4f}  F1 {evaluation['f1']:.4f}  ({count})"
        )
        if "entities" in evaluation:
            e = evaluation["entities"]
            lines.append(
                f"          entities P {e['precision']:.4f}  R {e['recall']:.4f}  "
                f"F1 {e['f1']:.4f}  ({e['support']} gold spans)"
            )
    elif evaluation:
        lines.append("test      " + format_scores(evaluation, 4) + f"  ({evaluation['examples']} examples)")
    for name, values in baselines.items():
        if "accuracy" in values:
            f1 = f"  macro F1 {values['f1']:.4f}" if "f1" in values else ""
            lines.append(f"baseline  {name:<15} accuracy {values['accuracy']:.4f}{f1}")
        else:
            lines.append(f"baseline  {name:<15} {format_scores(values, 4)}")
    uri = tracking_uri(cfg)
    lines += [
        "",
        f"metrics   {metrics}/*.json   plots: {cfg.paths.plots}/eval/ (dvc plots show)",
        f"MLflow    {uri}",
        f"          mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
        "=" * 72,
    ]
    return "\n".join(lines)


def run(cfg: Config) -> None:
    text = summary(cfg)
    with atomic_file(Path("reports") / "summary.txt") as tmp:
        tmp.write_text(text + "\n")
    print(text)


main = stage(run)

if __name__ == "__main__":
    main()
