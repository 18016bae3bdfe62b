"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Tests never touch the network: a hub lookup fails fast instead of hanging on a proxy. Set
# before anything imports huggingface_hub, which reads these once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data_dir() -> Path:
    """The team's shared data folder (``../shared/data`` next to the repo).

    Skips when it is absent (e.g. a fresh clone elsewhere); fails instead when
    ``LMFORGE_REQUIRE_SHARED_DATA=1``, so CI that provisions the data cannot skip silently.
    """
    path = SHARED_DATA.resolve()
    if not path.is_dir():
        reason = f"shared data folder {path} is absent"
        if os.environ.get("LMFORGE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{reason} but LMFORGE_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(f"{reason}; provide it or set LMFORGE_REQUIRE_SHARED_DATA=1 to fail instead")
    return path


# ---------------------------------------------------------------------------------------------
# A scratch lmforge project on the tiny experiment, shared by the experiment-tracking tests
# (sweeps, lineage, registry, serving, UI): git + DVC repository, data and pretrained encoder
# recorded in dvc.lock, MLflow store in its own mlflow.db. Built once per session (~2 min).

ROOT = Path(__file__).resolve().parents[1]


def run_cmd(*args: str, cwd: Path, timeout: float = 900, env: dict | None = None) -> str:
    """Run a command with this interpreter's bin folder first on PATH (dvc, mlflow) and this
    checkout's src importable; fail the test with its output on a non-zero exit."""
    import subprocess
    import sys
    import tempfile

    bin_dir = str(Path(sys.executable).parent)
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    for name in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "LMFORGE_PIPELINE_ID"):
        full_env.pop(name, None)
    # Output to files, not pipes: a command that leaves a daemon behind (`dvc queue start` forks its
    # workers with the caller's stdout) would otherwise hold the pipe open, and this call would wait
    # for the daemon instead of the command.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(args, cwd=cwd, env=full_env, stdout=out, stderr=err, text=True, timeout=timeout)
        stdout, stderr = (read_back(f) for f in (out, err))
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{stdout[-4000:]}\n{stderr[-4000:]}"
    return stdout + stderr


def read_back(file) -> str:
    file.seek(0)
    return file.read()


def tiny_overrides(root: Path) -> list[str]:
    return ["experiment=tiny", f"logger.tracking_uri=sqlite:///{root}/mlflow.db"]


def scratch_repo(root: Path, params: list[str]) -> None:
    """A git repository in ``root`` holding this project's pipeline (conf, src, dvc.yaml) with
    ``params.yaml`` composed from ``params`` overrides, committed once."""
    import shutil

    from lmforge.params import compose as compose_params

    # requirements.lock: a dependency of collect_corpus (corpus=docstrings reads what it pins).
    for name in ("conf", "src", ".dvc/config", ".dvcignore", "dvc.yaml", "requirements.lock"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, root / name)
    compose_params(root / "params.yaml", root, params)
    run_cmd("git", "init", "-q", cwd=root)
    run_cmd("git", "config", "user.email", "test@lmforge.invalid", cwd=root)
    run_cmd("git", "config", "user.name", "lmforge test", cwd=root)
    run_cmd("git", "add", "-A", cwd=root)
    run_cmd("git", "commit", "-qm", "scratch", cwd=root)


def stop_server(server) -> None:
    """Stop a server started in its own process group, killing it if SIGTERM is not enough."""
    import signal
    import subprocess

    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_until_up(server, url: str, log: Path, seconds: float) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or never does."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {seconds} s"
        time.sleep(1)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_json(url: str, payload: dict) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@contextmanager
def served_model(model_uri: str, tracking_uri: str, cwd: Path, log: Path) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` on a free loopback port (this checkout's lmforge
    importable, no new environment); yields its base URL once ``/ping`` answers."""
    import subprocess
    import sys

    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(server, f"{base}/ping", log, seconds=240)
            yield base
        finally:
            stop_server(server)


@pytest.fixture
def tiny_stage_config(tiny_project: Path, tmp_path: Path):
    """Make an ``experiment=tiny`` config, composed from tiny_project's conf/ with extra
    overrides, whose ``outputs`` and MLflow store lie under ``tmp_path``: a stage run on
    tiny_project (inside ``contextlib.chdir(tiny_project)``) that leaves the project's own outputs
    alone. Leave ``pretrained`` out of ``outputs`` to finetune tiny_project's pretrained encoder."""
    from hydra import compose, initialize_config_dir

    from lmforge.core.config import validate

    def make(*overrides: str, outputs=("pretrained", "finetuned", "metrics", "plots", "checkpoints")):
        paths = [f"paths.{key}={tmp_path / key}" for key in outputs]
        with initialize_config_dir(str(tiny_project / "conf"), version_base="1.3"):
            return validate(compose("config", overrides=[*tiny_overrides(tmp_path), *overrides, *paths]))

    return make


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """collect, prepare, tokenize, word_vectors and pretrain run in this process, each committed to
    DVC."""
    from hydra import compose, initialize_config_dir

    from lmforge import collect, collect_corpus, prepare, prepare_corpus, pretrain, tokenize, word_vectors
    from lmforge.core.config import validate

    root = tmp_path_factory.mktemp("project")
    scratch_repo(root, ["experiment=tiny"])
    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        cfg = validate(compose("config", overrides=tiny_overrides(root)))
    previous = Path.cwd()
    os.chdir(root)
    try:
        stages = (collect, prepare, collect_corpus, prepare_corpus, tokenize, word_vectors)
        for stage in stages:
            stage.run(cfg)
        # Recorded in dvc.lock and the DVC cache as if `dvc repro` had run them, so the pretrain
        # run (and later ones) see DVC-verified inputs.
        names = [stage.__name__.rsplit(".", 1)[-1] for stage in stages]
        run_cmd("dvc", "commit", "-f", "-q", *names, cwd=root)
        pretrain.run(cfg)
        run_cmd("dvc", "commit", "-f", "-q", "pretrain", cwd=root)
    finally:
        os.chdir(previous)
    return root


SWEEP_LRS = ("3e-3", "1e-3")
SWEEP_BATCHES = ("16", "32")


def sweep(root: Path, experiment: str, *extra: str) -> str:
    """A 2x2 finetuning sweep (learning rate x batch size) through the command line."""
    return run_cmd(
        sys_executable(),
        "-m",
        "lmforge.finetune",
        "-m",
        "experiment=tiny",
        "finetune.max_epochs=1",
        f"logger.experiment={experiment}",
        f"optim.lr={','.join(SWEEP_LRS)}",
        f"finetune.batch_size={','.join(SWEEP_BATCHES)}",
        *extra,
        cwd=root,
        # MLflow logs system metrics only after a full sampling interval (the stages'
        # default: 2 s); a tiny job on an idle machine can finish sooner.
        env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"},
    )


def sys_executable() -> str:
    import sys

    return sys.executable


@pytest.fixture(scope="session")
def swept_project(tiny_project: Path) -> Path:
    """tiny_project plus one 2x2 sweep (basic launcher) in experiment ``basic-finetune``."""
    sweep(tiny_project, "basic")
    return tiny_project
