"""finetune.val_check_interval: validation, best-checkpoint choice and patience inside an epoch."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ci]


def test_half_epoch_validation_scores_twice_per_epoch(
    tiny_project: Path, tmp_path: Path, tiny_stage_config
) -> None:
    from lmforge import finetune

    cfg = tiny_stage_config(
        "finetune.max_epochs=2",
        "finetune.patience=10",
        "finetune.val_check_interval=0.5",
        outputs=("finetuned", "metrics", "plots", "checkpoints"),
    )
    with contextlib.chdir(tiny_project):
        best = finetune.run(cfg)
    rows = list(csv.DictReader((tmp_path / "plots" / "finetune_curves.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "0", "1", "1"]
    steps = [int(r["step"]) for r in rows]
    metrics = json.loads((tmp_path / "metrics" / "finetune.json").read_text())
    # Two checks an epoch, half an epoch apart (Lightning's step counter may trail by one).
    per_epoch = metrics["steps"] / 2
    assert steps == sorted(steps) and abs(steps[0] - per_epoch / 2) <= 1
    assert all(abs(b - a - per_epoch / 2) <= 1 for a, b in zip(steps, steps[1:], strict=False))
    # The kept model is the best of the four checks, not the last one.
    assert best == pytest.approx(max(float(r["val_f1"]) for r in rows))
