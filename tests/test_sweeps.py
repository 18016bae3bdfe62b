"""Hydra sweeps as nested MLflow runs, through the command line on the tiny experiment.

A 2x2 sweep (learning rate x batch size) must leave exactly one parent run and four child runs in
mlflow.db, each child with its F1/precision/recall and its own registered model version, the
parent with the best child's F1; the same with the joblib launcher running all four jobs at once
against the one SQLite store; and the Optuna search config must run and report to the parent.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from conftest import SWEEP_BATCHES, SWEEP_LRS, sweep

pytestmark = [pytest.mark.slow, pytest.mark.ci]


def sweep_runs(root: Path, experiment: str) -> tuple:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    found = client.get_experiment_by_name(f"{experiment}-finetune")
    assert found is not None, f"no experiment {experiment}-finetune"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lmforge.sweep") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    (parent,) = parents
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # Nothing else in the experiment: no lost or orphaned runs.
    assert len(runs) == 1 + len(children)
    return client, parent, children


def check_children(client, root: Path, parent, children: list) -> None:
    assert parent.info.status == "FINISHED"
    for child in children:
        assert child.info.status == "FINISHED", child.info.run_name
        assert {"val/f1", "val/precision", "val/recall", "best_val_f1"} <= set(child.data.metrics)
        # One registered model version per job, from that job's own model folder.
        versions = client.search_model_versions(f"run_id = '{child.info.run_id}'")
        assert len(versions) == 1 and versions[0].name == "lmforge-classifier"
    best = max(children, key=lambda c: c.data.metrics["best_val_f1"])
    assert parent.data.metrics["best_val_f1"] == pytest.approx(best.data.metrics["best_val_f1"])
    assert parent.data.tags["lmforge.best_run_id"] == best.info.run_id
    assert parent.data.metrics["sweep/jobs"] == len(children)
    # Each job wrote its model into its own folder of the sweep: none overwrote another's.
    sweep_dir = Path(parent.data.tags["lmforge.sweep_dir"])
    written = {
        json.loads(p.read_text())["mlflow_run_id"] for p in sweep_dir.glob("*/models/finetuned/meta.json")
    }
    assert written == {c.info.run_id for c in children}
    assert not (root / "models/finetuned").exists()


def check_grid(parent, children: list) -> None:
    assert len(children) == 4
    grid = {(float(c.data.params["optim.lr"]), c.data.params["finetune.batch_size"]) for c in children}
    assert grid == {(float(lr), bs) for lr, bs in itertools.product(SWEEP_LRS, SWEEP_BATCHES)}
    for child in children:
        # Named after the overrides that tell it from its siblings, not the shared experiment=tiny.
        name = child.info.run_name
        assert "optim.lr=" in name and "finetune.batch_size=" in name and "experiment" not in name
    assert "optim.lr=" in parent.info.run_name


def test_basic_sweep_is_one_parent_and_four_child_runs(swept_project: Path) -> None:
    client, parent, children = sweep_runs(swept_project, "basic")
    check_grid(parent, children)
    check_children(client, swept_project, parent, children)
    assert parent.data.tags["lmforge.launcher"] == "BasicLauncher"


def test_joblib_sweep_runs_four_jobs_at_once_without_losing_runs(tiny_project: Path) -> None:
    # Four processes logging to one SQLite file at the same time; one torch thread each, since
    # the four share the machine's cores.
    sweep(tiny_project, "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "trainer.num_threads=1")
    client, parent, children = sweep_runs(tiny_project, "joblib")
    check_grid(parent, children)
    check_children(client, tiny_project, parent, children)
    assert parent.data.tags["lmforge.launcher"] == "JoblibLauncher"
    assert len({c.info.run_id for c in children}) == 4
    starts = sorted(c.info.start_time for c in children)
    ends = sorted(c.info.end_time for c in children)
    assert starts[1] < ends[0], "the jobs did not overlap: the launcher ran them in turn"


def test_optuna_search_reports_its_best_trial_on_the_parent(tiny_project: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweep extra is absent")
    from conftest import run_cmd, sys_executable

    run_cmd(
        sys_executable(),
        "-m",
        "lmforge.finetune",
        "-m",
        "hparams_search=finetune_optuna",
        "experiment=tiny",
        "finetune.max_epochs=1",
        "logger.experiment=optuna",
        "hydra.sweeper.n_trials=2",
        cwd=tiny_project,
    )
    client, parent, children = sweep_runs(tiny_project, "optuna")
    assert len(children) == 2
    check_children(client, tiny_project, parent, children)
    assert parent.data.tags["lmforge.sweeper"] == "OptunaSweeper"
    # Optuna maximised the value finetune's run() returned: the logged best_val_f1.
    import yaml

    results = yaml.safe_load(
        (Path(parent.data.tags["lmforge.sweep_dir"]) / "optimization_results.yaml").read_text()
    )
    assert results["best_value"] == pytest.approx(parent.data.metrics["best_val_f1"])
