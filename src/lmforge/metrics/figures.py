"""Figures the scoring code writes: a confusion matrix as a CSV of (actual, predicted) rows for
``dvc plots show`` and as an annotated PNG for MLflow. Shared by every task that assigns labels."""

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
