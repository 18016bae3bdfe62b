"""The payoff curve: a sweep's evaluate runs, grouped by budget, as a table, a CSV, a plot and an
MLflow run holding all three."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lmforge.payoff import main

# (DVC experiment, corpus_fraction, vectors.enabled, seed, test_accuracy)
SWEEP = [
    ("payoff-s0-scratch", "1.0", "False", "0", 0.80),
    ("payoff-s1-scratch", "1.0", "False", "1", 0.82),
    ("payoff-s0-f0", "0.0", "True", "0", 0.81),
    ("payoff-s1-f0", "0.0", "True", "1", 0.83),
    ("payoff-s0-f0.5", "0.5", "True", "0", 0.84),
    ("payoff-s1-f0.5", "0.5", "True", "1", 0.83),
    ("payoff-s0-f1", "1.0", "True", "0", 0.85),
    ("payoff-s1-f1", "1.0", "True", "1", 0.87),
]


def log_runs(uri: str, runs: list[tuple[str, str, str, str, float]]) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("lmforge-evaluate")
    for name, fraction, enabled, seed, accuracy in runs:
        with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"evaluate-{name}"):
            mlflow.set_tag("lmforge.dvc_experiment", name)
            mlflow.log_params({"vectors.corpus_fraction": fraction, "vectors.enabled": enabled, "seed": seed})
            mlflow.log_metric("test_accuracy", accuracy)


def test_a_sweep_becomes_a_table_a_plot_and_an_mlflow_run(tmp_path: Path, capsys) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Older runs first: a seed run again counts once (its newest run, 0.85 above), and a run of
    # another sweep stays out of it.
    log_runs(uri, [("payoff-s0-f1", "1.0", "True", "0", 0.10), ("other-s2-f1", "1.0", "True", "2", 0.99)])
    log_runs(uri, SWEEP)
    out = tmp_path / "payoff"
    args = ["--x", "vectors.corpus_fraction", "--runs", "payoff-*", "--scratch", "vectors.enabled=False"]
    assert main([*args, "--tracking-uri", uri, "--out", str(out), "--percent"]) == 0

    with open(out / "payoff.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["x"] for r in rows] == ["scratch", "0.0", "0.5", "1.0"]
    assert [float(r["mean"]) for r in rows] == pytest.approx([81.0, 82.0, 83.5, 86.0])
    assert [int(r["seeds"]) for r in rows] == [2, 2, 2, 2]
    assert float(rows[3]["sd"]) == pytest.approx(1.4142, abs=1e-3)  # stdev(85, 87)
    table = (out / "payoff.md").read_text()
    assert "| from scratch | 2 | 80.00 / 82.00 | 81.00 ± 1.41 |  |" in table
    assert "| 1.0 | 2 | 85.00 / 87.00 | 86.00 ± 1.41 | +5.00 |" in table
    assert table in capsys.readouterr().out
    assert (out / "payoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lmforge-payoff").experiment_id])
    assert run.data.metrics["mean.1.0"] == pytest.approx(86.0)
    assert run.data.metrics["mean.scratch"] == pytest.approx(81.0)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"payoff.png", "payoff.csv", "payoff.md"}
    assert len(run.data.tags["lmforge.payoff.run_ids"].split()) == len(SWEEP)


def test_no_matching_run_and_bad_filters_are_one_line_errors(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_runs(uri, SWEEP[:2])
    base = ["--tracking-uri", uri, "--out", str(tmp_path / "o"), "--no-log"]
    assert main(["--x", "vectors.corpus_fraction", "--runs", "nothing-*", *base]) == 1
    assert "no finished run in lmforge-evaluate" in capsys.readouterr().err
    assert main(["--x", "vectors.corpus_fraction", "--where", "seed", *base]) == 1
    assert "--where 'seed': give KEY=VALUE" in capsys.readouterr().err
    assert main(["--x", "vectors.corpus_fraction", "--experiment", "lmforge-nope", *base]) == 1
    assert "has no experiment lmforge-nope" in capsys.readouterr().err
