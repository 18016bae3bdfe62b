"""lmforge's MLflow experiments open on what matters: model training, a description, key metrics."""

from __future__ import annotations

import json

import pytest

from lmforge.tracking.runs import (
    DESCRIPTION_TAG,
    EXPERIMENT_KIND_TAG,
    KEY_METRICS_VIEW,
    SAVED_VIEW_PREFIX,
    ensure_experiment,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """One SQLite store for the module: creating one takes seconds (MLflow's migrations)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")
    return mlflow.MlflowClient()


def test_new_experiment_is_model_training_with_description_and_key_metrics_view(store) -> None:
    experiment = store.get_experiment(ensure_experiment("demo-finetune"))
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert "best_val_f1" in experiment.tags[DESCRIPTION_TAG]
    assert "\n" not in experiment.tags[DESCRIPTION_TAG]
    view = json.loads(experiment.tags[SAVED_VIEW_PREFIX + KEY_METRICS_VIEW])
    state = json.loads(view["state"])
    assert view["name"] == "Key metrics"
    assert state["selectedColumns"][0] == "metrics.`best_val_f1`"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best_val_f1`", False)


def test_pretraining_view_sorts_by_loss_ascending(store) -> None:
    experiment = store.get_experiment(ensure_experiment("demo-pretrain"))
    state = json.loads(json.loads(experiment.tags[SAVED_VIEW_PREFIX + KEY_METRICS_VIEW])["state"])
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val/loss`", True)


def test_experiment_made_before_the_tags_gets_them_and_keeps_its_own(store) -> None:
    experiment_id = store.create_experiment("old-evaluate", tags={DESCRIPTION_TAG: "my own words"})
    assert ensure_experiment("old-evaluate") == experiment_id
    tags = store.get_experiment(experiment_id).tags
    assert tags[DESCRIPTION_TAG] == "my own words"
    assert tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert SAVED_VIEW_PREFIX + KEY_METRICS_VIEW in tags


def test_a_text_to_text_task_leads_the_view_with_its_objective(store) -> None:
    experiment = store.get_experiment(ensure_experiment("t2t-finetune", objective="best_val_loss"))
    state = json.loads(json.loads(experiment.tags[SAVED_VIEW_PREFIX + KEY_METRICS_VIEW])["state"])
    assert state["selectedColumns"][0] == "metrics.`best_val_loss`"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best_val_loss`", True)
