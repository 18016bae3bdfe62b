"""The ``lmforge`` command (``lmforge.console``, also ``python -m lmforge``) and the
lightning-hydra-template conventions it brings: callbacks/, debug/, conf/local/, tags, paths/.

Quick checks run in this process or in a light subprocess; the two end-to-end runs of finetune
through the command (about 15 s each on an idle 2-core machine) share one tiny workspace with
pretraining off (about 6 s)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmforge import console
from lmforge.core.config import Config, LoggerConfig, compose
from lmforge.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "mlflow", "hydra", "transformers")


def light_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }


def test_help_lists_the_stages_in_dvc_yaml_order_and_imports_nothing_heavy() -> None:
    code = (
        "import sys; from lmforge.console import main; main(['--help']); "
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=light_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    listed = re.findall(r"^  (\w+) ", out.stdout.split("other commands:")[0], re.M)
    assert listed == stages
    # One line each, from the module's docstring.
    assert re.search(r"^  finetune +Train the task's head", out.stdout, re.M)
    others = out.stdout.split("other commands:")[1]
    assert {"run", "ui", "generate", "export", "promote"} <= set(re.findall(r"^  (\w+) ", others, re.M))


def test_python_m_lmforge_runs_the_stages_front_door() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lmforge", "finetune", "--help"],
        cwd=ROOT,
        env=light_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m lmforge.finetune")
    assert "callbacks:" in out.stdout and "debug:" in out.stdout
    # Hydra's job (log file, the sweep callback's MLflow experiment) is named after the stage.
    out = subprocess.run(
        [sys.executable, "-m", "lmforge", "finetune", "--cfg", "hydra"],
        cwd=ROOT,
        env=light_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "    name: finetune\n" in out.stdout


def test_an_unknown_command_is_one_line(capsys) -> None:
    assert console.main(["finetuen"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'finetuen'" in err and "finetune" in err


def test_run_is_dvc_repro_under_one_pipeline_id(monkeypatch, capsys) -> None:
    calls = []
    monkeypatch.setattr(console.subprocess, "call", lambda cmd, cwd, env: calls.append((cmd, cwd, env)) or 0)
    monkeypatch.chdir(ROOT / "src")  # found from below the project folder too
    monkeypatch.delenv("LMFORGE_PIPELINE_ID", raising=False)
    assert console.main(["run", "-f", "finetune"]) == 0
    ((cmd, cwd, env),) = calls
    assert cmd == [sys.executable, "-m", "dvc", "repro", "-f", "finetune"] and cwd == ROOT
    assert re.fullmatch(r"\d{8}-\d{6}", env["LMFORGE_PIPELINE_ID"])
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    monkeypatch.setenv("LMFORGE_PIPELINE_ID", "mine")
    console.main(["run"])
    assert calls[-1][2]["LMFORGE_PIPELINE_ID"] == "mine"


def test_ui_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        console.main(["ui", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lmforge ui") and "--port" in out and "finetune runs table" in out


def mlflow_store(path: Path, experiment: str = "lmforge-finetune") -> tuple[str, str]:
    import mlflow

    uri = f"sqlite:///{path}"
    return uri, mlflow.MlflowClient(uri).create_experiment(experiment)


def test_the_ui_link_is_the_finetune_runs_table(tmp_path: Path, monkeypatch, capsys) -> None:
    from lmforge.tracking.ui import finetune_runs_link, runs_table_url, ui_base

    assert runs_table_url("http://127.0.0.1:5000/", "7") == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert ui_base("https://bob:secret@mlflow.example.org/") == "https://mlflow.example.org"
    assert ui_base("sqlite:////x/mlflow.db", port=5001) == "http://127.0.0.1:5001"
    missing = tmp_path / "none.db"
    assert finetune_runs_link(f"sqlite:///{missing}", "lmforge") is None and not missing.exists()

    uri, experiment_id = mlflow_store(tmp_path / "mlflow.db")
    assert finetune_runs_link(uri, "lmforge") == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    assert finetune_runs_link(uri, "other") is None

    # `lmforge ui` on the store the stages use (logger.tracking_uri here), without serving.
    calls = []
    monkeypatch.setattr(console.subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    monkeypatch.chdir(ROOT)
    assert console.main(["ui", "--port", "5055", f"logger.tracking_uri={uri}"]) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:5055/#/experiments/{experiment_id}/runs" in out
    ((cmd,),) = [calls]
    assert cmd[1:] == [
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        "5055",
    ]


def test_the_pipeline_summary_prints_the_link(tmp_path: Path, monkeypatch) -> None:
    from lmforge.report import summary

    uri, experiment_id = mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    text = summary(Config(logger=LoggerConfig(tracking_uri=uri)))
    assert f"runs      http://127.0.0.1:5000/#/experiments/{experiment_id}/runs" in text


def test_conf_local_is_read_when_present_and_left_out_of_params_yaml(tmp_path: Path) -> None:
    from lmforge.params import compose as compose_params

    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    assert compose(root=tmp_path).trainer.num_workers == 0
    compose_params(tmp_path / "without.yaml", tmp_path)
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "local" / "default.yaml").write_text(
        "# @package _global_\ntrainer:\n  num_workers: 3\ntags: [gpu-box]\n"
    )
    cfg = compose(root=tmp_path)
    assert cfg.trainer.num_workers == 3 and cfg.tags == ["gpu-box"]
    assert compose(["trainer.num_workers=1"], root=tmp_path).trainer.num_workers == 1  # the line wins
    compose_params(tmp_path / "with.yaml", tmp_path)
    assert (tmp_path / "with.yaml").read_text() == (tmp_path / "without.yaml").read_text()
    assert "/conf/local/" in (ROOT / ".gitignore").read_text().split()


def test_tags_and_callbacks_are_checked_in_one_line() -> None:
    from lmforge.core.cli import check_overrides

    assert compose(["tags=[a,b]"], root=ROOT).tags == ["a", "b"]
    with pytest.raises(UserError, match=r"^config key 'tags': 'mlflow.x' is no MLflow tag name") as err:
        compose(["tags=[mlflow.x]"], root=ROOT)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"^config key 'callbacks.mine': must be a mapping with _target_"):
        compose(["+callbacks.mine.patience=3"], root=ROOT)
    check_overrides(
        ["callbacks=[default,lr_monitor]", "debug=fdr", "paths=default", "tags=[a,b]"], ROOT / "conf"
    )
    with pytest.raises(UserError, match=r"^unknown debug 'fast'; valid choices: debug=default, fdr, few"):
        check_overrides(["debug=fast"], ROOT / "conf")
    # A list of group options is checked option by option; a list key wants a list.
    with pytest.raises(UserError, match=r"^unknown callbacks 'nope'; valid choices: callbacks=default, lr_"):
        check_overrides(["callbacks=[default,nope]"], ROOT / "conf")
    with pytest.raises(UserError, match=r"^config key 'tags': takes a list, e.g. tags=\[a\]$"):
        check_overrides(["tags=a"], ROOT / "conf")


def test_callbacks_are_added_to_the_stages_own() -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar

    from lmforge.lit.fit import configured_callbacks

    assert configured_callbacks(compose(root=ROOT)) == []
    cfg = compose(["callbacks=[default,lr_monitor,rich_progress]"], root=ROOT)
    assert [type(c) for c in configured_callbacks(cfg)] == [LearningRateMonitor, RichProgressBar]
    dropped = compose(["callbacks=[lr_monitor,rich_progress]", "callbacks.rich_progress=null"], root=ROOT)
    assert [type(c) for c in configured_callbacks(dropped)] == [LearningRateMonitor]
    wrong = compose(["+callbacks.bad._target_=lightning.pytorch.callbacks.NoSuchCallback"], root=ROOT)
    with pytest.raises(UserError, match=r"^config key 'callbacks.bad': cannot build") as err:
        configured_callbacks(wrong)
    assert "\n" not in str(err.value)


def test_debug_presets_compose_and_hold_the_validation_interval_within_their_batches() -> None:
    from lmforge.lit.fit import debug_options

    fdr = compose(["debug=fdr"], root=ROOT)
    assert fdr.trainer.fast_dev_run and fdr.tags == ["debug"] and fdr.logger.registered_model is None
    few = compose(["debug=few"], root=ROOT)
    assert debug_options(few, "pretrain", {"val_check_interval": 100, "limit_val_batches": 10}) == {
        "limit_train_batches": 5,
        "limit_val_batches": 2,
        "val_check_interval": 5,
    }
    assert compose(["debug=overfit"], root=ROOT).trainer.overfit_batches == 3
    profiled = debug_options(compose(["debug=profiler"], root=ROOT), "finetune", {"val_check_interval": 1.0})
    assert type(profiled["profiler"]).__name__ == "SimpleProfiler" and "val_check_interval" not in profiled
    with pytest.raises(UserError, match=r"^config key 'trainer.limit_train_batches': 1.5 is neither"):
        compose(["trainer.limit_train_batches=1.5"], root=ROOT)


# ---------------------------------------------------------------------------------------------
# End to end: `python -m lmforge finetune ...` (the console's code path) on a tiny workspace.

TINY = ["experiment=tiny", "pretrain.enabled=false", "vectors.enabled=false"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """collect, prepare, tokenize and (disabled) pretrain of the tiny experiment, in this process."""
    from lmforge import collect, prepare, pretrain, tokenize

    root = tmp_path_factory.mktemp("console")
    (root / "conf").symlink_to(ROOT / "conf")
    previous = Path.cwd()
    os.chdir(root)
    try:
        cfg = compose([*TINY, f"logger.tracking_uri=sqlite:///{root}/setup.db"], root=root)
        for stage in (collect, prepare, tokenize, pretrain):
            stage.run(cfg)
    finally:
        os.chdir(previous)
    return root


def lmforge(root: Path, store: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**light_env(), "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5"}
    for name in ("MLFLOW_TRACKING_URI", "LMFORGE_PIPELINE_ID", "DVC_ROOT"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-m", "lmforge", "finetune", *TINY, f"logger.tracking_uri=sqlite:///{store}", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def finetune_runs(store: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    return client.search_runs([client.get_experiment_by_name("lmforge-finetune").experiment_id])


def test_finetune_debug_fdr_is_one_quick_run_with_the_given_tags(workspace: Path, tmp_path: Path) -> None:
    import time

    store = tmp_path / "mlflow.db"
    start = time.monotonic()
    lmforge(workspace, store, "debug=fdr", "tags=[a,b]", f"paths.finetuned={tmp_path}/finetuned")
    print(f"lmforge finetune debug=fdr: {time.monotonic() - start:.1f} s")
    (run,) = finetune_runs(store)
    assert run.data.tags["a"] == run.data.tags["b"] == "true"
    assert run.data.params["trainer.fast_dev_run"] == "True"


def test_the_lr_monitor_callback_logs_lr_metrics(workspace: Path, tmp_path: Path) -> None:
    import mlflow

    store = tmp_path / "mlflow.db"
    lmforge(
        workspace,
        store,
        "debug=few",
        "callbacks=[default,lr_monitor]",
        "trainer.log_every_n_steps=1",
        f"paths.finetuned={tmp_path}/ft",
    )
    (run,) = finetune_runs(store)
    lr = [name for name in run.data.metrics if name.startswith("lr-")]
    assert lr, sorted(run.data.metrics)
    history = mlflow.MlflowClient(f"sqlite:///{store}").get_metric_history(run.info.run_id, lr[0])
    assert len(history) >= 5  # every step of the few batches (2 epochs x 5)
    assert run.data.tags["debug"] == "true"  # the debug presets' tag
    assert "val/f1" in run.data.metrics  # Lightning's own logging goes on beside it
