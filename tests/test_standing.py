"""Where the model stands: its test figure against each baseline's, as a difference, and what to
try when a baseline wins (issue 34). Quick: synthetic ``metrics/eval.json`` and
``metrics/baselines.json``, no training; the evaluate run's metrics are checked end to end in
``tests/test_pipeline.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge import evaluate, report
from lmforge.core.config import Config, compose
from lmforge.core.task_registry import get_task

ROOT = Path(__file__).resolve().parents[1]
BASELINES = {
    "majority_class": {"accuracy": 0.2500, "precision": 0.0625, "recall": 0.25, "f1": 0.1},
    "tfidf_logreg": {"accuracy": 0.8946, "precision": 0.89, "recall": 0.89, "f1": 0.8901},
}
LEVERS = ("corpus=", "pretrain.enabled=true", "model=hf")


def evaluation(accuracy: float, **extra: float) -> dict:
    return {"accuracy": accuracy, "precision": 0.88, "recall": 0.87, "f1": 0.875, "examples": 1000, **extra}


def config(tmp_path: Path) -> Config:
    return compose(
        [
            f"paths.metrics={tmp_path}/metrics",
            f"paths.prepared={tmp_path}/prepared",
            f"paths.plots={tmp_path}/plots",
            f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        root=ROOT,
    )


def summary(tmp_path: Path, evaluation: dict, baselines: dict | None) -> list[str]:
    """The report's summary lines for these two metrics files."""
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    (metrics / "eval.json").write_text(json.dumps(evaluation))
    if baselines is not None:
        (metrics / "baselines.json").write_text(json.dumps(baselines))
    return report.summary(config(tmp_path)).splitlines()


def starting(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if line.startswith(prefix)]


def test_a_baseline_that_wins_is_named_with_the_levers_to_try() -> None:
    standing = get_task("classification").standing(evaluation(0.8919), BASELINES)
    assert standing is not None
    assert standing["metric"] == "accuracy" and standing["model"] == 0.8919
    assert standing["vs"] == pytest.approx({"tfidf_logreg": -0.0027, "majority_class": 0.6419})
    assert standing["best_baseline"] == "tfidf_logreg" and standing["best_baseline_value"] == 0.8946
    assert standing["vs_best"] == pytest.approx(-0.0027)
    assert standing["baseline_wins"] is True
    assert all(lever in standing["levers"] for lever in LEVERS)


def test_a_model_above_every_baseline_gets_no_levers() -> None:
    standing = get_task("classification").standing(evaluation(0.9100), BASELINES)
    assert standing is not None
    assert standing["baseline_wins"] is False and "levers" not in standing
    assert standing["vs_best"] == pytest.approx(0.0154)


def test_a_tie_is_not_a_win() -> None:
    standing = get_task("classification").standing(evaluation(0.8946), BASELINES)
    assert standing is not None
    assert standing["vs_best"] == 0.0 and standing["baseline_wins"] is False and "levers" not in standing


def test_no_standing_without_a_shared_figure() -> None:
    task = get_task("classification")
    assert task.standing(evaluation(0.9), {}) is None
    assert task.standing({"sacrebleu": 30.0}, BASELINES) is None
    assert task.standing(evaluation(0.9), {"lead": {"rougeL": 13.8}}) is None


def test_each_task_names_a_figure_its_baselines_share_with_its_evaluation() -> None:
    # The keys the tasks' baselines write (tasks/*/stages.py) and their eval.json holds.
    assert get_task("classification").headline_metric == "accuracy"
    assert get_task("tagging").headline_metric == "accuracy"
    text2text = get_task("text2text")
    standing = text2text.standing(
        {"rougeL": 28.91, "sacrebleu": 16.8}, {"lead": {"rougeL": 13.8}, "retrieval": {"rougeL": 28.5}}
    )
    assert standing is not None and standing["best_baseline"] == "retrieval"
    assert text2text.standing_lines(standing)[0] == (
        "standing  test rougeL 28.91: +0.41 points vs retrieval (28.50), the best baseline; +15.11 vs lead"
    )


def test_the_summary_says_a_baseline_wins_and_what_to_try(tmp_path: Path) -> None:
    lines = summary(tmp_path, evaluation(0.8919), BASELINES)
    assert starting(lines, "standing") == [
        "standing  test accuracy 0.8919: -0.27 points vs tfidf_logreg (0.8946), the best baseline; "
        "+64.19 vs majority_class"
    ]
    (levers,) = starting(lines, "to try")
    assert all(lever in levers for lever in LEVERS)


def test_the_summary_of_a_model_above_the_baselines_has_no_levers(tmp_path: Path) -> None:
    lines = summary(tmp_path, evaluation(0.9100), BASELINES)
    assert starting(lines, "standing") == [
        "standing  test accuracy 0.9100: +1.54 points vs tfidf_logreg (0.8946), the best baseline; "
        "+66.00 vs majority_class"
    ]
    assert not starting(lines, "to try")


def test_the_summary_prefers_the_standing_evaluate_stored(tmp_path: Path) -> None:
    stored = get_task("classification").standing(evaluation(0.8919), BASELINES)
    lines = summary(tmp_path, {**evaluation(0.8919), "standing": stored}, None)
    assert starting(lines, "standing  test accuracy 0.8919: -0.27 points vs tfidf_logreg")
    assert starting(lines, "to try")


def test_without_baselines_the_summary_has_no_standing(tmp_path: Path) -> None:
    lines = summary(tmp_path, evaluation(0.8919), None)
    assert starting(lines, "test      accuracy 0.8919")
    assert not starting(lines, "standing") and not starting(lines, "to try")


def test_the_summary_shows_the_fusion_weight_and_the_encoder_alone(tmp_path: Path) -> None:
    lines = summary(tmp_path, evaluation(0.8919, ngram_weight=0.8, encoder_accuracy=0.8312), BASELINES)
    assert starting(lines, "fusion") == [
        "fusion    n-gram weight 0.80 (chosen on validation); the encoder alone: test accuracy 0.8312"
    ]
    assert not starting(summary(tmp_path, evaluation(0.8919), BASELINES), "fusion")


def test_evaluate_skips_the_standing_without_baselines_and_says_why(tmp_path: Path, capsys) -> None:
    cfg, task = config(tmp_path), get_task("classification")
    assert evaluate.baseline_standing(cfg, task, evaluation(0.8919)) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "baselines.json is missing" in out and "baselines stage first" in out
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/baselines.json").write_text(json.dumps(BASELINES))
    standing = evaluate.baseline_standing(cfg, task, evaluation(0.8919))
    assert standing is not None and standing["baseline_wins"] is True
    assert evaluate.standing_metrics(standing) == pytest.approx(
        {
            "test_accuracy_vs_tfidf_logreg": -0.0027,
            "test_accuracy_vs_majority_class": 0.6419,
            "test_accuracy_vs_best_baseline": -0.0027,
        }
    )
    assert evaluate.standing_metrics(None) == {}
