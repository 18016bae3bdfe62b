"""The DVC pipeline in a scratch git repository, on the tiny experiment.

Proves what users rely on: `dvc repro` runs every stage once and then nothing; an override of a
finetune parameter re-runs only finetune and what follows; `dvc metrics diff` shows the change;
`dvc push` / `dvc pull` restore the data byte for byte. Slow (several stage processes), so it is
marked `ci`: out of the quick `make test`, always run by `.ci/run`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import scratch_repo

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ci]


def sh(*args: str, cwd: Path) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_ROOT", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    scratch_repo(repo, ["experiment=tiny"])
    remote = tmp_path_factory.mktemp("remote")
    sh("dvc", "remote", "modify", "--local", "local", "url", str(remote), cwd=repo)
    return repo


def test_repro_runs_everything_once_then_nothing(repo: Path) -> None:
    first = sh("dvc", "repro", cwd=repo)
    assert ran_stages(first) == {
        "collect",
        "prepare",
        "collect_corpus",
        "prepare_corpus",
        "tokenize",
        "word_vectors",
        "pretrain",
        "finetune",
        "evaluate",
        "baselines",
        "report",
    }
    assert (repo / "dvc.lock").is_file() and (repo / "metrics/eval.json").is_file()
    second = sh("dvc", "repro", cwd=repo)
    assert ran_stages(second) == set()
    assert "up to date" in second
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "pipeline outputs", cwd=repo)


def test_finetune_override_reruns_only_finetune_and_after(repo: Path) -> None:
    before = (repo / "metrics/eval.json").read_text()
    output = sh("dvc", "exp", "run", "-S", "experiment=tiny", "-S", "optim.lr=0.01", cwd=repo)
    assert ran_stages(output) == {"finetune", "evaluate", "report"}
    assert "lr: 0.01" in (repo / "params.yaml").read_text()
    diff = sh("dvc", "metrics", "diff", cwd=repo)
    assert "metrics/eval.json" in diff and "accuracy" in diff
    assert (repo / "metrics/eval.json").read_text() != before


def test_push_and_pull_restore_data_byte_for_byte(repo: Path) -> None:
    expected = tree_digest(repo / "data")
    sh("dvc", "push", cwd=repo)
    shutil.rmtree(repo / "data/raw")
    shutil.rmtree(repo / "data/shards")
    shutil.rmtree(repo / ".dvc/cache")
    sh("dvc", "pull", cwd=repo)
    assert tree_digest(repo / "data") == expected
