"""Learning curves as files: per-step CSVs for ``dvc plots`` and a PNG logged to the MLflow run.

MLflow keeps the same figures as metric histories; the CSVs let ``dvc plots show`` / ``dvc plots
diff`` compare curves across DVC experiments and commits without a tracking server.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning as L

# Validation figures copied from Lightning's callback metrics into the curve, in this order.
VAL_KEYS = (
    "val/loss",
    "val/f1",
    "val/precision",
    "val/recall",
    "val/accuracy",
    "val/perplexity",
    "val/mlm_accuracy",
    "val/next_token_accuracy",
)


def _column(key: str) -> str:
    return key.replace("/", "_")


class CurveWriter(L.Callback):
    """Record the training loss at every step and the validation figures at every validation.

    ``per_step=True`` writes one row per training step (``step, train_loss``); otherwise one row
    per validation (``step, epoch, train_loss`` averaged since the previous validation, then the
    validation figures). The file is rewritten after each validation and at the end of fit, so a
    run stopped early still leaves its curve. ``log_to_mlflow`` logs the CSV and a PNG of it to the
    active MLflow run at the end.
    """

    def __init__(self, path: str | Path, *, per_step: bool, log_to_mlflow: bool = True) -> None:
        self.path = Path(path)
        self.per_step = per_step
        self.log_to_mlflow = log_to_mlflow
        self.rows: list[dict[str, float | int]] = []
        self._pending: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach() if hasattr(loss, "detach") else loss)
        if self.per_step:
            self.rows.append({"step": trainer.global_step, "train_loss": value})
        else:
            self._pending.append(value)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.per_step or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row: dict[str, float | int] = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        row["train_loss"] = sum(self._pending) / len(self._pending) if self._pending else math.nan
        self._pending = []
        for key in VAL_KEYS:
            if key in metrics:
                row[_column(key)] = float(metrics[key])
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        if not self.rows:
            return
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # under DDP rank 0 writes (from its own training losses)
            return
        self.write()
        if not self.log_to_mlflow or not self.rows:
            return
        import mlflow

        if mlflow.active_run() is None:
            return
        mlflow.log_artifact(str(self.path), "curves")
        png = self.path.with_suffix(".png")
        plot_curves(self.rows, png, title=self.path.stem.replace("_", " "))
        mlflow.log_artifact(str(png), "curves")


def plot_curves(rows: list[dict[str, float | int]], path: Path, title: str) -> None:
    """Losses on the left axis, the other figures (F1, accuracy...) on the right, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    columns = [k for k in rows[0] if k not in ("step", "epoch")]
    for row in rows[1:]:
        columns += [k for k in row if k not in columns and k not in ("step", "epoch")]
    fig, left = plt.subplots(figsize=(7, 4))
    right = None
    marker = "" if len(rows) > 30 else "o"
    for key in columns:
        values = [r.get(key, math.nan) for r in rows]
        if "loss" in key or "perplexity" in key:
            left.plot(steps, values, marker=marker, label=key)
        else:
            right = right or left.twinx()
            right.plot(steps, values, marker=marker, linestyle="--", label=key)
    left.set_xlabel("step")
    left.set_ylabel("loss")
    handles, labels = left.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel("score")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    left.legend(handles, labels, fontsize=8, loc="best")
    left.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
