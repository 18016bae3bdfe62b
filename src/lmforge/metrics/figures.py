"""Figures the scoring code writes, each as a CSV for ``dvc plots show`` and a PNG for MLflow: a
confusion matrix (rows of actual, predicted), per-class (or per-tag) F1 as bars, a binary
classifier's precision-recall curve; and tables (the test examples a model got wrong) as CSV.
Shared by every task that assigns labels. Matplotlib is imported when a PNG is drawn."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from lmforge.core.io import atomic_file


def confusion_csv(pairs: Iterable[tuple[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(pairs)


def confusion_png(matrix, labels: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    peak = matrix.max() or 1
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            str(int(value)),
            ha="center",
            va="center",
            color="white" if value > peak / 2 else "black",
            fontsize=8,
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def f1_csv(per_class: dict[str, dict], path: Path) -> None:
    """One row per class (or tag): ``label, f1, support``, for dvc.yaml's bar chart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "f1", "support"])
        writer.writerows((name, f"{v['f1']:.6f}", v["support"]) for name, v in per_class.items())


def f1_png(per_class: dict[str, dict], path: Path, title: str) -> None:
    """A horizontal bar per class (or tag): its F1, with its support beside the bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(name) for name in per_class]
    scores = [float(v["f1"]) for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(names) + 1.2)))
    rows = range(len(names))
    ax.barh(rows, scores, color="tab:blue")
    ax.set_yticks(rows, names)
    ax.invert_yaxis()  # the first class on top, as listed
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("F1")
    for row, (score, value) in enumerate(zip(scores, per_class.values(), strict=True)):
        ax.text(min(score, 1.0) + 0.01, row, f"{score:.2f} (n={value['support']})", va="center", fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def pr_curve(scores, positives, positive: str, csv_path: Path, png_path: Path) -> float:
    """A binary classifier's precision-recall curve over the positive class's probabilities
    (``positives``: 1 where the gold label is ``positive``): a CSV of ``recall, precision,
    threshold`` rows for ``dvc plots`` and a PNG; returns the average precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(positives, scores)
    average = float(average_precision_score(positives, scores))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["recall", "precision", "threshold"])
        # The last point (recall 0, precision 1) has no threshold.
        for i in range(len(precision)):
            threshold = f"{thresholds[i]:.6f}" if i < len(thresholds) else ""
            writer.writerow([f"{recall[i]:.6f}", f"{precision[i]:.6f}", threshold])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.step(recall, precision, where="post")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"test precision-recall ({positive!s}): AP {average:.3f}")
    fig.tight_layout()
    with atomic_file(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return average


def table_csv(table: dict[str, list], path: Path) -> None:
    """A table of columns (as ``mlflow.log_table`` takes it) as a CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(table))
        writer.writerows(zip(*table.values(), strict=True))
