"""Lineage and artifacts of tracked runs, on the tiny project (a real git + DVC repository).

Walks from a finetuning run to the pretraining run it started from and on to the data hashes
DVC recorded in dvc.lock; checks what else a finetuning run keeps (checkpoints, per-class
report, learning curves, system metrics, dataset inputs, git commit) and that ``dvc plots``
reads the learning-curve files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_cmd
from lmforge.tracking.lineage import dvc_state, folder_sha256

pytestmark = [pytest.mark.slow, pytest.mark.ci]


def best_child(root: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("basic-finetune")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`lmforge.sweep` = 'parent'")
    return client, client.get_run(parent.data.tags["lmforge.best_run_id"])


def lock_outs(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_lineage_walks_from_finetune_run_to_the_data_in_dvc_lock(swept_project: Path) -> None:
    client, finetune = best_child(swept_project)
    tags = finetune.data.tags
    # finetune -> the pretraining run whose encoder it loaded
    pretrain = client.get_run(tags["lmforge.pretrain_run_id"])
    assert pretrain.data.tags["lmforge.stage"] == "pretrain" and pretrain.info.status == "FINISHED"
    assert tags["lmforge.pretrain_checkpoint"].endswith("models/pretrained/encoder.pt")
    meta = json.loads((swept_project / "models/pretrained/meta.json").read_text())
    assert meta["mlflow_run_id"] == pretrain.info.run_id
    # -> the data and tokenizer both runs read, as DVC recorded them
    outs = lock_outs(swept_project)
    for run in (finetune, pretrain):
        for name, path in (("shards", "data/shards"), ("tokenizer", "data/tokenizer")):
            assert run.data.tags[f"lmforge.lineage.{name}.dvc_md5"] == outs[path]
            assert run.data.tags[f"lmforge.lineage.{name}.dvc_state"] == "verified"
            assert run.data.tags[f"lmforge.lineage.{name}.sha256"] == folder_sha256(swept_project / path)
    assert tags["lmforge.lineage.pretrained.dvc_md5"] == outs["models/pretrained"]
    assert tags["lmforge.lineage.pretrained.dvc_state"] == "verified"
    # -> and DVC itself agrees the workspace holds those versions.
    status = run_cmd(
        "dvc", "status", "--json", "collect", "prepare", "tokenize", "pretrain", cwd=swept_project
    )
    assert json.loads(status.strip().splitlines()[-1]) == {}
    head = run_cmd("git", "rev-parse", "HEAD", cwd=swept_project).strip()
    assert tags["git.commit"] == pretrain.data.tags["git.commit"] == head


def test_modified_data_is_not_passed_off_as_the_dvc_version(swept_project: Path, tmp_path: Path) -> None:
    md5 = lock_outs(swept_project)["data/shards"]
    copy = tmp_path / "shards"
    shutil.copytree(swept_project / "data/shards", copy)
    assert dvc_state(swept_project, copy, md5) == "verified"
    with open(copy / "meta.json", "a") as handle:
        handle.write(" ")
    assert dvc_state(swept_project, copy, md5) == "modified"
    (copy / "meta.json").unlink()
    assert dvc_state(swept_project, copy, md5) == "modified"


def test_finetune_run_keeps_checkpoints_reports_curves_inputs_and_system_metrics(swept_project: Path) -> None:
    client, run = best_child(swept_project)
    run_id = run.info.run_id
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert {"checkpoints", "curves", "val_per_class.json", "config.yaml", "finetune.json"} <= listed
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    }
    assert {a.path for a in client.list_artifacts(run_id, "curves")} == {
        "curves/finetune_curves.csv",
        "curves/finetune_curves.png",
    }
    report = json.loads(Path(client.download_artifacts(run_id, "val_per_class.json")).read_text())
    labels = json.loads((swept_project / "data/prepared/labels.json").read_text())
    assert set(report["per_class"]) == {str(x) for x in labels}
    assert sum(c["support"] for c in report["per_class"].values()) == report["examples"] > 0
    metrics = run.data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val"}
    profile = json.loads(inputs["val"].dataset.profile)
    labelled = [
        r
        for r in map(json.loads, (swept_project / "data/prepared/val.jsonl").open())
        if r.get("label") is not None
    ]
    assert profile["num_rows"] == len(labelled)


def test_dvc_plots_reads_the_learning_curves(swept_project: Path) -> None:
    # A sweep job writes its curve into its own folder; put one where dvc.yaml declares it.
    job_curve = next((swept_project / "multirun").glob("**/plots/finetune_curves.csv"))
    (swept_project / "plots").mkdir(exist_ok=True)
    shutil.copy(job_curve, swept_project / "plots/finetune_curves.csv")
    pretrain_rows = (swept_project / "plots/pretrain_loss.csv").read_text().splitlines()
    assert pretrain_rows[0] == "step,train_loss" and len(pretrain_rows) == 1 + 20  # max_steps=20
    # DVC prints its JSON, then a line about the confusion plot no stage has written here.
    shown, _ = json.JSONDecoder().raw_decode(run_cmd("dvc", "plots", "show", "--json", cwd=swept_project))
    for path in ("plots/pretrain_loss.csv", "plots/finetune_curves.csv"):
        assert not [e for e in shown.get("errors", []) if e.get("name") == path]
        (plot,) = shown["data"][path]
        assert plot["content"]["encoding"]["x"]["field"] == "step"
        values = plot["content"]["data"]["values"]
        if "pretrain" in path:  # one y column: train_loss at each of the 20 steps
            assert [int(v["step"]) for v in values] == list(range(1, 21)) and "train_loss" in values[0]
        else:  # several y columns, drawn as one line per field
            assert {v["field"] for v in values} == {"train_loss", "val_loss", "val_f1"}
