"""A team's shared MLflow server: database store, proxied artifacts, basic auth, over HTTP.

The test starts ``mlflow server`` on 127.0.0.1 the way docs/scaling-out.md says
(SQLite store, ``--serve-artifacts`` into a folder of its own, ``--app-name basic-auth``), creates
two users through the auth API, and runs the project against it with credentials from the
environment only: a 2-job finetuning sweep (each job registers its model) as one user,
``lmforge.promote`` as the other. A client without credentials is refused; a wrong password or
a server that is down fails in one line; the password reaches no run, log or file; the model and
every artifact live in the server's artifact folder and come back through the server.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, stop_server, wait_until_up

pytestmark = [pytest.mark.slow, pytest.mark.ci]

pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth]: pip install -e '.[scale]'")

ADMIN_PASSWORD = "admin-pass-0d8f3a"  # MLflow wants 12 characters or more
USERS = {"ana": "ana-pass-5be1c97e", "ben": "ben-pass-92c4e0aa"}
EXPERIMENT = "team"
MODEL = "lmforge-classifier"
# What docs/scaling.md tells the admin to write: an auth database beside the tracking one, and a
# default permission that lets every user log to and promote in the team's shared experiments.
AUTH_INI = """[mlflow]
default_permission = EDIT
database_uri = sqlite:///{folder}/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Each request otherwise re-hashes the password (PBKDF2, ~0.5 s of CPU on this machine).
auth_cache_ttl_seconds = 300
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(
    url: str, user: str | None = None, password: str | None = None, payload: dict | None = None
) -> dict:
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, headers=headers), timeout=30
    ) as response:
        return json.loads(response.read() or b"{}")


def clean_env(**extra: str) -> dict[str, str]:
    """This interpreter's tools on PATH, this checkout importable, no MLflow settings but ``extra``."""
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "LMFORGE_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


def client_env(server: dict, user: str | None, password: str | None = None) -> dict[str, str]:
    """What a team member exports: the server's URL and their own login, nothing in any file."""
    login = (
        {}
        if user is None
        else {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password or USERS[user]}
    )
    return clean_env(MLFLOW_TRACKING_URI=server["url"], **login)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> dict:
    """``mlflow server`` with basic auth on a free port of 127.0.0.1, and two users, ana and ben."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    (folder / "basic_auth.ini").write_text(AUTH_INI.format(folder=folder))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        MLFLOW_AUTH_CONFIG_PATH=str(folder / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY="test-csrf-key-4e1b",
    )
    log_path = folder / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder}/mlflow.db",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--app-name",
            "basic-auth",
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_up(process, f"{url}/health", log_path, seconds=240)
        for user, password in USERS.items():
            request(
                f"{url}/api/2.0/mlflow/users/create",
                "admin",
                ADMIN_PASSWORD,
                {"username": user, "password": password},
            )
        yield {"url": url, "folder": folder, "artifacts": folder / "artifacts", "log": log_path}
    finally:
        stop_server(process)
        log.close()


@pytest.fixture(scope="module")
def team_sweep(server: dict, tiny_project: Path) -> dict:
    """ana's 2-job sweep and ben's promote, both over HTTP; their outputs for the tests."""
    sweep = run(
        [
            sys.executable,
            "-m",
            "lmforge.finetune",
            "-m",
            "experiment=tiny",
            "finetune.max_epochs=1",
            "trainer.num_threads=1",
            f"logger.experiment={EXPERIMENT}",
            "optim.lr=3e-3,1e-3",
        ],
        tiny_project,
        client_env(server, "ana"),
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    promote = run(
        [sys.executable, "-m", "lmforge.promote", "--sweep", "latest", "--experiment", EXPERIMENT],
        tiny_project,
        client_env(server, "ben"),
    )
    assert promote.returncode == 0, promote.stdout + promote.stderr
    return {
        "output": sweep.stdout + sweep.stderr + promote.stdout + promote.stderr,
        "promote": promote.stdout,
    }


def authenticated_client(server: dict, monkeypatch, user: str = "ana"):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", USERS[user])
    return MlflowClient(server["url"])


def test_a_client_without_valid_credentials_is_refused_in_one_line(server: dict, tiny_project: Path) -> None:
    search = f"{server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    for login in ((None, None), ("ana", "not-her-password")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            request(search, *login)
        assert refused.value.code == 401
    assert "experiments" in request(search, "ana", USERS["ana"])

    # lmforge's commands say so in one line before doing anything, naming what to set.
    sweep = [
        sys.executable,
        "-m",
        "lmforge.finetune",
        "-m",
        "experiment=tiny",
        f"logger.experiment={EXPERIMENT}-refused",
        "optim.lr=3e-3,1e-3",
    ]
    promote = [sys.executable, "-m", "lmforge.promote", "--experiment", EXPERIMENT]
    cases = [
        (sweep, client_env(server, None), "requires a login (HTTP 401); export MLFLOW_TRACKING_USERNAME"),
        (
            sweep,
            client_env(server, "ana", "wrong-password-123"),
            "refused the credentials of user 'ana' (HTTP 401)",
        ),
        (
            promote,
            client_env(server, "ben", "wrong-password-456"),
            "refused the credentials of user 'ben' (HTTP 401)",
        ),
    ]
    for args, env, expected in cases:
        done = run(args, tiny_project, env, timeout=300)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
        assert lines[0].startswith(f"lmforge: error: MLflow server {server['url']} ")
        assert "wrong-password" not in done.stdout + done.stderr
    # The refused sweeps stopped before creating anything: no experiment, no parent run.
    with pytest.raises(urllib.error.HTTPError) as missing:
        request(
            f"{server['url']}/api/2.0/mlflow/experiments/get-by-name?experiment_name="
            f"{EXPERIMENT}-refused-finetune",
            "admin",
            ADMIN_PASSWORD,
        )
    assert missing.value.code == 404


def test_a_stopped_server_fails_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    done = run(
        [sys.executable, "-m", "lmforge.promote", "--experiment", EXPERIMENT],
        ROOT,
        clean_env(
            MLFLOW_TRACKING_URI=url, MLFLOW_TRACKING_USERNAME="ana", MLFLOW_TRACKING_PASSWORD=USERS["ana"]
        ),
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"MLflow server {url} is unreachable" in done.stderr


def test_a_sweep_over_http_is_one_parent_and_two_child_runs(
    server: dict, team_sweep: dict, monkeypatch
) -> None:
    client = authenticated_client(server, monkeypatch)
    experiment = client.get_experiment_by_name(f"{EXPERIMENT}-finetune")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("lmforge.sweep") == "parent"]
    assert len(parents) == 1
    (parent,) = parents
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and len(runs) == 3
    assert {float(c.data.params["optim.lr"]) for c in children} == {3e-3, 1e-3}
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"val/f1", "best_val_f1"} <= set(child.data.metrics)
    assert parent.info.status == "FINISHED"
    best = max(children, key=lambda c: c.data.metrics["best_val_f1"])
    assert parent.data.tags["lmforge.best_run_id"] == best.info.run_id


def test_promote_over_http_sets_the_alias_on_the_best_registered_version(
    server: dict, team_sweep: dict, monkeypatch
) -> None:
    client = authenticated_client(server, monkeypatch, "ben")
    experiment = client.get_experiment_by_name(f"{EXPERIMENT}-finetune")
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    versions = {v.run_id: v for v in client.search_model_versions(f"name = '{MODEL}'")}
    # Each job registered its model; promote pointed the alias at the best job's version.
    assert {c.info.run_id for c in children} <= set(versions)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    best = max(children, key=lambda c: c.data.metrics["best_val_f1"])
    assert champion.run_id == best.info.run_id
    assert f"-> version {champion.version} (run {best.info.run_id}" in team_sweep["promote"]


def test_artifacts_travel_through_the_server_into_its_own_folder(
    server: dict, team_sweep: dict, tiny_project: Path, monkeypatch
) -> None:
    import mlflow

    client = authenticated_client(server, monkeypatch)
    experiment = client.get_experiment_by_name(f"{EXPERIMENT}-finetune")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    stored = [p for p in server["artifacts"].rglob("*") if p.is_file()]
    for child in children:
        run_id = child.info.run_id
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")
        # The run's config and model landed in the server's folder, and nowhere in the project.
        assert any(p.name == "config.yaml" and run_id in p.parts for p in stored), run_id
        assert not [p for p in tiny_project.rglob(f"*{run_id}*")]
    assert sum(p.name == "MLmodel" for p in stored) >= len(children)

    # And they come back through the server: the champion, loaded by alias, labels text.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["url"])
    mlflow.set_tracking_uri(server["url"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        out = model.predict(["Open the editor window and highlight the syntax of the file."])
        assert len(out) == 1 and out["prob_" + str(out["label"][0])][0] > 0
    finally:
        mlflow.set_tracking_uri(None)


def test_no_password_reaches_a_run_a_log_or_a_file(
    server: dict, team_sweep: dict, tiny_project: Path, monkeypatch
) -> None:
    secrets = [ADMIN_PASSWORD, *USERS.values()]
    assert not [s for s in secrets if s in team_sweep["output"]]
    client = authenticated_client(server, monkeypatch)
    experiment = client.get_experiment_by_name(f"{EXPERIMENT}-finetune")
    for found in client.search_runs([experiment.experiment_id]):
        logged = json.dumps({**found.data.params, **found.data.tags})
        assert not [s for s in secrets if s in logged], found.info.run_name
    # Every file the runs wrote, on the client (sweep logs, models, lock files) and on the server
    # (artifacts, its own tracking database), byte for byte.
    for folder in (tiny_project, server["artifacts"]):
        for path in (p for p in folder.rglob("*") if p.is_file()):
            content = path.read_bytes()
            assert not [s for s in secrets if s.encode() in content], path
    tracking_db = (server["folder"] / "mlflow.db").read_bytes()
    assert not [s for s in secrets if s.encode() in tracking_db]
