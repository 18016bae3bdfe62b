"""A stage's output on a normal run: its own progress and summary, no library chatter.

Pretrain and finetune run on the tiny project (experiment=tiny) through the command line, as a
user would start them, their outputs and MLflow store in the test's tmp folder. Without
``--verbose`` the output holds no INFO line from Lightning or MLflow and no warning; with it
(finetune), the libraries' INFO lines are back.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from conftest import run_cmd

pytestmark = [pytest.mark.slow, pytest.mark.ci]

# What the libraries print when nothing is wrong: log records (MLflow's `2026/01/01 12:00:00
# INFO mlflow...`, Lightning's `GPU available: ...`, alembic's `INFO  [alembic...]`) and
# Python warnings (`...py:12: PossibleUserWarning: ...`).
LIBRARY_INFO = re.compile(r"\bINFO\b|GPU available|TPU available|LOCAL_RANK|Trainable params")
WARNING = re.compile(r"Warning\b|\bWARNING\b|warnings\.warn")


def stage_output(project: Path, tmp_path: Path, stage: str, *extra: str) -> str:
    outputs = [f"paths.{key}={tmp_path / key}" for key in ("metrics", "plots", "checkpoints", "finetuned")]
    if stage == "pretrain":
        outputs.append(f"paths.pretrained={tmp_path / 'pretrained'}")
    return run_cmd(
        sys.executable,
        "-m",
        f"lmforge.{stage}",
        "experiment=tiny",
        "finetune.max_epochs=1",
        "pretrain.max_steps=10",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        *outputs,
        *extra,
        cwd=project,
    )


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_stage_prints_its_progress_and_summary_without_library_chatter(
    tiny_project: Path, tmp_path: Path, stage: str
) -> None:
    output = stage_output(tiny_project, tmp_path, stage)
    lines = output.splitlines()
    assert any(line.startswith(f"{stage}: ") and "MLflow run" in line for line in lines), output
    chatter = [line for line in lines if LIBRARY_INFO.search(line) or WARNING.search(line)]
    assert chatter == [], output


def test_verbose_brings_the_library_lines_back(tiny_project: Path, tmp_path: Path) -> None:
    output = stage_output(tiny_project, tmp_path, "finetune", "--verbose")
    chatter = [line for line in output.splitlines() if LIBRARY_INFO.search(line)]
    # MLflow's INFO records and Lightning's start-up banners both.
    assert any("mlflow" in line for line in chatter), output
    assert any("GPU available" in line or "Seed set" in line for line in chatter), output
