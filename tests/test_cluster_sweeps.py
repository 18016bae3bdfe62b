"""Sweeps through Hydra's submitit launcher: jobs in their own processes here, on SLURM elsewhere.

``hydra/launcher=submitit_local`` runs each job in a subprocess that submitit starts from a
pickle of the job, as ``submitit_slurm`` does on a cluster node: the sweep must still be one MLflow
parent run with one child run per job, each job's model in its own folder. The SLURM launcher
(and the project's ``hydra/launcher=slurm`` preset) cannot run here; their config must compose with
the keys people set, through lmforge's own override checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_cmd, sys_executable

pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason="the submitit launcher is absent: pip install -e '.[scale]'",
)

SLURM_KEYS = {
    "partition": "gpu-a100",
    "gpus_per_node": 4,
    "timeout_min": 90,
    "array_parallelism": 3,
    "cpus_per_task": 16,
    "mem_gb": 120,
}


@pytest.mark.slow
@pytest.mark.ci
def test_submitit_local_sweep_is_one_parent_and_a_child_run_per_job(tiny_project: Path) -> None:
    from test_sweeps import check_children, sweep_runs

    run_cmd(
        sys_executable(),
        "-m",
        "lmforge.finetune",
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=tiny",
        "finetune.max_epochs=1",
        "trainer.num_threads=1",
        "logger.experiment=submitit",
        "optim.lr=3e-3,1e-3",
        cwd=tiny_project,
    )
    client, parent, children = sweep_runs(tiny_project, "submitit")
    assert len(children) == 2
    assert {float(c.data.params["optim.lr"]) for c in children} == {3e-3, 1e-3}
    check_children(client, tiny_project, parent, children)
    assert parent.data.tags["lmforge.launcher"] == "LocalLauncher"
    # Each job ran in a process submitit started (its pickled job and log are in the sweep's
    # .submitit folder), not in the launching one.
    sweep_dir = Path(parent.data.tags["lmforge.sweep_dir"])
    logs = sorted((sweep_dir / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2, logs


def composed_hydra(*overrides: str, cwd: Path) -> dict:
    output = run_cmd(
        sys_executable(), "-m", "lmforge.finetune", *overrides, "--cfg", "hydra", cwd=cwd, timeout=120
    )
    return yaml.safe_load(output[output.index("hydra:") :])["hydra"]


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm"])
def test_the_slurm_launcher_composes_with_the_keys_people_set(launcher: str) -> None:
    root = Path(__file__).resolve().parents[1]
    keys = [f"hydra.launcher.{key}={value}" for key, value in SLURM_KEYS.items()]
    composed = composed_hydra(
        f"hydra/launcher={launcher}", *keys, "+hydra.launcher.additional_parameters.mail-type=END", cwd=root
    )
    launcher_cfg = composed["launcher"]
    assert launcher_cfg["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert {key: launcher_cfg[key] for key in SLURM_KEYS} == SLURM_KEYS
    assert launcher_cfg["additional_parameters"] == {"mail-type": "END"}
    # The sweep callback rides along: on the cluster too, every job is a child run.
    assert composed["callbacks"]["mlflow_sweep"]["_target_"] == "lmforge.tracking.sweep.MlflowSweep"


def test_the_slurm_preset_holds_the_documented_defaults() -> None:
    root = Path(__file__).resolve().parents[1]
    launcher_cfg = composed_hydra("hydra/launcher=slurm", cwd=root)["launcher"]
    preset = yaml.safe_load((root / "conf/hydra/launcher/slurm.yaml").read_text())
    assert {k: launcher_cfg[k] for k in preset if k != "defaults"} == {
        k: v for k, v in preset.items() if k != "defaults"
    }
    readme = (root / "README.md").read_text() + (root / "docs/scaling.md").read_text()
    for key in SLURM_KEYS:
        assert f"hydra.launcher.{key}" in readme, f"{key} is not documented"


def test_cfg_with_a_sweep_fails_in_one_line(tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys_executable(), "-m", "lmforge.finetune", "-m", "hydra/launcher=slurm", "--cfg", "hydra"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("lmforge: error: --cfg prints one job's config and cannot run with -m")
    assert len(done.stderr.strip().splitlines()) == 1
