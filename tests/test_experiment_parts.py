"""Quick checks of the experiment-tracking parts that need no training run (the slow, end-to-end
proofs are test_sweeps, test_lineage, test_registry and test_mlflow_ui)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.core.cli import check_overrides, check_plugins, stage_name
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.tracking.lineage import dvc_lock_outs, dvc_state, folder_sha256, lineage_tags
from lmforge.tracking.runs import JOB_DIR_ENV, job_outputs

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_overrides_pass_the_key_check() -> None:
    check_overrides(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hparams_search=finetune_optuna",
            "optim.lr=1e-3,3e-4",
        ]
    )
    with pytest.raises(UserError, match="unknown config key 'optim.lrr'"):
        check_overrides(["optim.lrr=1e-3"])


def test_missing_sweep_plugin_is_a_one_line_error(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "optuna" in name else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install -e '\.\[sweep\]'"):
        check_plugins(["hparams_search=finetune_optuna"])
    check_plugins(["optim.lr=1e-3"])


def test_stage_name_is_the_module_also_under_python_m() -> None:
    from lmforge import finetune

    assert stage_name(finetune.run) == "finetune"
    # `python -m lmforge.finetune` runs the module as __main__: Hydra's job name must still be it.
    out = subprocess.run(
        [sys.executable, "-m", "lmforge.finetune", "--cfg", "hydra"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "    name: finetune\n" in out.stdout
    assert "lmforge.tracking.sweep.MlflowSweep" in out.stdout


def test_sweep_job_writes_its_outputs_into_its_own_folder(monkeypatch, tmp_path: Path) -> None:
    cfg = Config()
    assert job_outputs(cfg, "finetune") is cfg
    monkeypatch.setenv(JOB_DIR_ENV, str(tmp_path))
    moved = job_outputs(cfg, "finetune")
    assert moved.paths.finetuned == str(tmp_path / "models/finetuned")
    assert moved.paths.metrics == str(tmp_path / "metrics")
    # Inputs stay shared.
    assert moved.paths.pretrained == cfg.paths.pretrained and moved.paths.shards == cfg.paths.shards


def dvc_style_project(root: Path) -> str:
    """A folder recorded the way DVC records it: dvc.lock md5 and the .dir manifest in the cache."""
    import hashlib

    shards = root / "data/shards"
    shards.mkdir(parents=True)
    (shards / "a.bin").write_bytes(b"\x00\x01")
    (shards / "meta.json").write_text("{}")
    entries = [
        {"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.name} for p in sorted(shards.iterdir())
    ]
    manifest = json.dumps(entries).encode()
    md5 = hashlib.md5(manifest).hexdigest()
    cache = root / ".dvc/cache/files/md5" / md5[:2]
    cache.mkdir(parents=True)
    (cache / f"{md5[2:]}.dir").write_bytes(manifest)
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  tokenize:\n    outs:\n    - path: data/shards\n"
        f"      hash: md5\n      md5: {md5}.dir\n      nfiles: 2\n"
    )
    return f"{md5}.dir"


def test_lineage_tags_name_the_dvc_version_and_notice_changes(tmp_path: Path) -> None:
    md5 = dvc_style_project(tmp_path)
    assert dvc_lock_outs(tmp_path) == {"data/shards": md5}
    cfg = Config()
    tags = lineage_tags(cfg, "pretrain", root=tmp_path)
    assert tags["lmforge.lineage.shards.dvc_md5"] == md5
    assert tags["lmforge.lineage.shards.dvc_state"] == "verified"
    assert tags["lmforge.lineage.shards.sha256"] == folder_sha256(tmp_path / "data/shards")
    assert "lmforge.lineage.tokenizer.path" not in tags  # absent folders are not invented
    (tmp_path / "data/shards/a.bin").write_bytes(b"\x00\x02")
    assert dvc_state(tmp_path, tmp_path / "data/shards", md5) == "modified"
    assert (
        lineage_tags(cfg, "pretrain", root=tmp_path)["lmforge.lineage.shards.sha256"]
        != tags["lmforge.lineage.shards.sha256"]
    )


def test_curve_writer_rows_per_validation(tmp_path: Path) -> None:
    import torch

    from lmforge.tracking.curves import CurveWriter

    class Trainer:
        sanity_checking = False
        is_global_zero = True  # one process: the only rank writes the curves
        global_step = 0
        current_epoch = 0
        callback_metrics: dict = {}

    trainer, path = Trainer(), tmp_path / "curves.csv"
    writer = CurveWriter(path, per_step=False, log_to_mlflow=False)
    for epoch, losses in enumerate(([2.0, 1.0], [0.5, 0.5])):
        for loss in losses:
            trainer.global_step += 1
            writer.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/loss": torch.tensor(0.9), "val/f1": torch.tensor(0.4)}
        writer.on_validation_end(trainer, None)
    rows = list(csv.DictReader(path.open()))
    assert [(r["step"], r["epoch"], float(r["train_loss"])) for r in rows] == [
        ("2", "0", 1.5),
        ("4", "1", 0.5),
    ]
    assert float(rows[0]["val_f1"]) == pytest.approx(0.4)
    assert float(rows[1]["val_loss"]) == pytest.approx(0.9)


def test_threads_follow_the_config_then_omp_num_threads_then_every_cpu(monkeypatch) -> None:
    import os

    import torch

    from lmforge.core.config import Config, TrainerConfig
    from lmforge.lit.trainer import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_threads(Config(trainer=TrainerConfig(num_threads=None)))
        assert torch.get_num_threads() == 1
        set_threads(Config(trainer=TrainerConfig(num_threads=2)))
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        set_threads(Config(trainer=TrainerConfig(num_threads=None)))
        assert torch.get_num_threads() == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
