"""A team's DVC data remote over S3: push, lose everything local, pull back byte for byte.

The remote is an S3-compatible server (moto) the test starts on 127.0.0.1; DVC talks to it through
dvc-s3 with docs/scaling-out.md's commands (``dvc remote add``, ``dvc remote modify ... endpointurl``), the
credentials coming from the environment only (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``):
``.dvc/config`` never holds them, and without them ``dvc push`` is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stop_server, wait_until_up

pytestmark = [pytest.mark.slow, pytest.mark.ci]

pytest.importorskip("dvc_s3", reason="the S3 remote needs dvc-s3: pip install -e '.[scale]'")
pytest.importorskip("moto", reason="the local S3 server needs moto: pip install -e '.[dev]'")

BUCKET = "lmforge-data"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIALMFORGETEST0001",
    "AWS_SECRET_ACCESS_KEY": "lmforge-test-secret-7f3e9c1d",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The stages tiny_project ran and recorded in dvc.lock (finetune and later never ran there), and
# their outputs.
STAGES = ("collect", "prepare", "tokenize", "pretrain")
OUTPUTS = ("data/raw", "data/prepared", "data/tokenizer", "data/shards", "models/pretrained")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dvc(*args: str, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def base_env(home: Path) -> dict[str, str]:
    """No AWS settings from this machine: no variables, and a home without ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def tree_digest(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def s3_server(tmp_path: Path):
    """moto's S3 server on a free port of 127.0.0.1, holding one empty bucket."""
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "moto.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=base_env(tmp_path),
        start_new_session=True,
    )
    try:
        wait_until_up(server, f"{url}/moto-api/data.json", log_path, seconds=60)
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket=BUCKET)
        yield url, s3
    finally:
        stop_server(server)
        log.close()


def test_push_and_pull_through_s3_restore_the_pipeline_data_byte_for_byte(
    tiny_project: Path, s3_server, tmp_path: Path
) -> None:
    url, s3 = s3_server
    # A clone of the session's project, so deleting its data cannot disturb other tests.
    repo = tmp_path / "project"
    shutil.copytree(
        tiny_project,
        repo,
        symlinks=True,
        ignore=shutil.ignore_patterns("multirun", "outputs", "mlruns", "mlartifacts"),
    )
    home = tmp_path / "home"
    home.mkdir()
    anonymous = base_env(home)
    member = {**anonymous, **CREDENTIALS}

    # docs/scaling-out.md's commands: the remote (no secret in them) is committed for the whole team.
    dvc("remote", "add", "-d", "team", f"s3://{BUCKET}/lmforge", cwd=repo, env=anonymous)
    dvc("remote", "modify", "team", "endpointurl", url, cwd=repo, env=anonymous)
    expected = tree_digest(repo, OUTPUTS)
    assert len(expected) > 10

    refused = dvc("push", *STAGES, cwd=repo, env=anonymous, check=False)
    assert refused.returncode != 0 and "Unable to locate credentials" in refused.stderr
    dvc("push", *STAGES, cwd=repo, env=member)
    stored = s3.list_objects_v2(Bucket=BUCKET, Prefix="lmforge/")
    assert stored["KeyCount"] >= len(expected)

    for folder in OUTPUTS:
        shutil.rmtree(repo / folder)
    shutil.rmtree(repo / ".dvc/cache")
    dvc("pull", *STAGES, cwd=repo, env=member)
    assert tree_digest(repo, OUTPUTS) == expected

    for name in (".dvc/config", ".dvc/config.local"):
        path = repo / name
        text = path.read_text() if path.is_file() else ""
        assert CREDENTIALS["AWS_ACCESS_KEY_ID"] not in text
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in text
        assert "secret_access_key" not in text and "access_key_id" not in text
    assert f"endpointurl = {url}" in (repo / ".dvc/config").read_text()
