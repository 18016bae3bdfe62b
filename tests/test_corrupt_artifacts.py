"""Damaged artifacts, early interrupts and bad output paths: one line, never a traceback.

Quick tests check the readers (``lmforge.core.io``), the MLflow store check, the start-up
interrupt and the output-path check. The slow battery builds a tiny pipeline's outputs once (in
this process), then for each artifact a stage reads truncates or garbles it in a copy of the
workspace and runs the reading stage as a user would: exit 2, one stderr line naming the file,
no traceback. docs/bad-input.md lists the cases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmforge.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def run_stage(workdir: Path, stage: str, *overrides: str, timeout: float = 300):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYDRA_FULL_ERROR": "0"}
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "LMFORGE_VERBOSE"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", f"lmforge.{stage}", *overrides],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line(done: subprocess.CompletedProcess, *expected: str, code: int = 2) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble_head(path: Path, size: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[:size] = b"\xa5" * min(size, len(data))
    path.write_bytes(bytes(data))


def garble_pages(path: Path) -> None:
    """Overwrite the page headers of the middle third of a SQLite file's pages (its header,
    page 1, stays intact)."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    pages = len(data) // page
    for number in range(max(1, pages // 3), max(2, 2 * pages // 3)):
        data[number * page : number * page + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# quick: the readers


def test_readers_name_the_file_and_the_stage_to_rerun(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from lmforge.core.io import load_json, load_npy, torch_load

    torch.save({"w": torch.ones(200, 20)}, tmp_path / "model.pt")
    truncate(tmp_path / "model.pt")
    (tmp_path / "config.json").write_text('{"task": "classification", "mo')
    np.save(tmp_path / "offsets.npy", np.arange(1000))
    truncate(tmp_path / "offsets.npy")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases = [
        (lambda: torch_load(tmp_path / "model.pt", "finetune"), "model.pt is not a readable PyTorch file"),
        (lambda: torch_load(tmp_path / "empty.pt", "pretrain"), "empty.pt is empty (0 bytes; truncated)"),
        (lambda: load_json(tmp_path / "config.json", "finetune"), "config.json is not valid JSON"),
        (lambda: load_npy(tmp_path / "offsets.npy", "tokenize"), "offsets.npy is not a readable .npy array"),
        (lambda: load_json(tmp_path / "absent.json", "tokenize"), "absent.json is missing; run the tokenize"),
    ]
    for read, expected in cases:
        with pytest.raises(UserError) as info:
            read()
        message = str(info.value)
        assert expected in message and "\n" not in message
        assert "missing" in message or "rerun the" in message


def test_a_truncated_checkpoint_says_how_to_start_afresh(tmp_path: Path) -> None:
    import torch

    from lmforge.lit.callbacks import AtomicCheckpointIO
    from lmforge.lit.resume import check_checkpoint

    path = tmp_path / "last.ckpt"
    torch.save({"global_step": 3, "w": torch.ones(500)}, path)
    check_checkpoint(path)  # a complete one passes
    truncate(path)
    for check in (check_checkpoint, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(UserError, match=r"last.ckpt is .*truncated or corrupt.*resume=false"):
            check(path)


def make_store(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE metrics (key TEXT, value REAL, step INTEGER)")
    connection.execute("CREATE INDEX by_key ON metrics (key, step)")
    connection.executemany(
        "INSERT INTO metrics VALUES (?, ?, ?)", ((f"val/loss{i % 7}", i / 3, i) for i in range(20000))
    )
    connection.commit()
    connection.close()


@pytest.mark.parametrize("damage", [garble_head, garble_pages], ids=["header", "pages"])
def test_a_damaged_sqlite_store_is_not_called_busy(tmp_path: Path, damage) -> None:
    from lmforge.tracking.safety import check_store

    db = tmp_path / "mlflow.db"
    make_store(db)
    check_store(f"sqlite:///{db}", timeout=0.2)
    damage(db)
    with pytest.raises(UserError) as info:
        check_store(f"sqlite:///{db}", timeout=0.2)
    message = str(info.value)
    assert message.startswith(f"MLflow store sqlite:///{db} is damaged (") and "\n" not in message
    assert "mv " in message and "wait" not in message and "another process" not in message


def test_damage_found_while_mlflow_reads_is_named_too() -> None:
    from lmforge.tracking.safety import sqlite_damage

    try:
        try:
            raise sqlite3.DatabaseError("database disk image is malformed")
        except sqlite3.DatabaseError as inner:
            raise RuntimeError("(sqlite3.DatabaseError) wrapped by SQLAlchemy") from inner
    except RuntimeError as exc:
        assert "malformed" in str(sqlite_damage(exc))
    assert sqlite_damage(sqlite3.OperationalError("database is locked")) is None


def test_output_paths_are_checked_before_any_work(tmp_path: Path) -> None:
    from lmforge.core.io import output_file

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="generate.output=.* is an existing folder; give a file name"):
        output_file(tmp_path, "generate.output")
    with pytest.raises(UserError, match="a_file is a file, not a folder"):
        output_file(tmp_path / "a_file" / "out.json", "eval.output")
    assert output_file(tmp_path / "new" / "out.jsonl", "generate.output") == tmp_path / "new" / "out.jsonl"


def scratch(tmp_path: Path) -> Path:
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    return tmp_path


def test_generate_output_that_is_a_folder_fails_at_once(tmp_path: Path) -> None:
    workdir = scratch(tmp_path)
    (workdir / "out").mkdir()
    started = time.monotonic()
    done = run_stage(workdir, "generate", "generate.prompt=hello", "generate.output=out")
    assert_one_line(done, "generate.output=out is an existing folder")
    assert time.monotonic() - started < 60  # no model was loaded, nothing generated


# Not earlier than 0.3 s: before lmforge is imported (~40 ms idle, several times that on a busy
# machine) the signal meets Python's own handler, which no package can replace.
@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
@pytest.mark.parametrize("stage", ["prepare", "tokenize"])
def test_an_interrupt_at_start_up_is_one_line_and_exit_130(tmp_path: Path, stage: str, delay: float) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("LMFORGE_VERBOSE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", f"lmforge.{stage}", "experiment=tiny"],
        cwd=scratch(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    # The stage may reach its missing input first: one line and exit 2, or, when the signal
    # lands while that process is already exiting, death by SIGINT (the shell's 130) after it.
    if process.returncode in (2, -signal.SIGINT) and "run the" in stderr:
        assert len(stderr.strip().splitlines()) == 1, stderr[-3000:]
        pytest.skip("the stage got to its missing input before the signal (a fast machine)")
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == [
        "lmforge: error: interrupted by SIGINT; outputs were left unchanged; run the same command "
        "again to resume pretrain/finetune from their last checkpoint (resume=false starts afresh)"
    ]


# ---------------------------------------------------------------------------------------------
# slow: the battery, through the stage commands on a tiny pipeline's real outputs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny pipeline's outputs (word vectors on), built once in this process; MLflow store at
    the default place (``<project>/mlflow.db``), so a copy of the folder is a working project."""
    from hydra import compose, initialize_config_dir

    from lmforge import collect, finetune, prepare, pretrain, tokenize, word_vectors
    from lmforge.core.config import validate

    root = scratch(tmp_path_factory.mktemp("corrupt"))
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        # The store named outright: an earlier test in this process may have left MLflow's
        # tracking URI (and MLFLOW_TRACKING_URI) pointing at its own.
        store = f"logger.tracking_uri=sqlite:///{root}/mlflow.db"
        cfg = validate(compose("config", overrides=["experiment=tiny", "finetune.max_epochs=1", store]))
        vectors = validate(compose("config", overrides=["experiment=tiny", "vectors.enabled=true", store]))
    previous = Path.cwd()
    os.chdir(root)
    try:
        for stage in (collect, prepare, tokenize, pretrain, finetune):
            stage.run(cfg)
        word_vectors.run(vectors)
    finally:
        os.chdir(previous)
    return root


def copy_of(workspace: Path, name: str) -> Path:
    target = workspace.parent / f"{workspace.name}-{name}"
    shutil.copytree(workspace, target, symlinks=True, ignore=shutil.ignore_patterns("multirun"))
    return target


def interrupted_finetune(workdir: Path) -> None:
    """``checkpoints/finetune`` as a killed ``finetune`` leaves it (for the same config), with its
    ``last.ckpt`` cut short."""
    from hydra import compose, initialize_config_dir

    from lmforge.core.config import validate
    from lmforge.lit.resume import config_hash

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose("config", overrides=["experiment=tiny", "finetune.max_epochs=1"]))
    folder = workdir / cfg.paths.checkpoints / "finetune"
    folder.mkdir(parents=True)
    state = {"stage": "finetune", "mlflow_run_id": None, "pipeline_id": "p", "config_hash": config_hash(cfg)}
    (folder / "resume.json").write_text(json.dumps(state))
    shutil.copy(workdir / "models/finetuned/model.pt", folder / "last.ckpt")
    truncate(folder / "last.ckpt")


@dataclass
class Damage:
    name: str
    file: str  # relative to the workspace
    damage: object  # callable(Path)
    stage: str
    expected: str
    overrides: tuple[str, ...] = ()


CASES = [
    Damage("model weights", "models/finetuned/model.pt", truncate, "evaluate", "rerun the finetune stage"),
    Damage("model config", "models/finetuned/config.json", garble_head, "evaluate", "not valid JSON"),
    Damage("model meta", "models/finetuned/meta.json", truncate, "evaluate", "rerun the finetune stage"),
    Damage("pretrained encoder", "models/pretrained/encoder.pt", truncate, "finetune", "rerun the pretrain"),
    Damage("shard index", "data/shards/test.offsets.npy", truncate, "evaluate", "rerun the tokenize stage"),
    Damage("shard meta", "data/shards/meta.json", garble_head, "evaluate", "rerun the tokenize stage"),
    Damage(
        "word vectors",
        "models/word_vectors/vectors.npy",
        truncate,
        "finetune",
        "rerun the word_vectors stage",
        ("vectors.enabled=true",),
    ),
    Damage("store header", "mlflow.db", garble_head, "evaluate", "is damaged (file is not a database)"),
    Damage("store pages", "mlflow.db", garble_pages, "evaluate", "is damaged ("),
    Damage("checkpoint", "outputs/checkpoints/finetune/last.ckpt", None, "finetune", "resume=false to start"),
]


@pytest.mark.slow
@pytest.mark.ci
def test_every_damaged_artifact_is_one_line_naming_it(workspace: Path) -> None:
    jobs = []
    for case in CASES:
        workdir = copy_of(workspace, case.name.replace(" ", "-"))
        if case.damage is None:
            interrupted_finetune(workdir)
        else:
            case.damage(workdir / case.file)
        overrides = ("experiment=tiny", "finetune.max_epochs=1", *case.overrides)
        jobs.append((case, workdir, overrides))
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(lambda job: run_stage(job[1], job[0].stage, *job[2]), jobs))
    failures = []
    for (case, _, _), result in zip(jobs, done, strict=True):
        try:
            line = assert_one_line(result, case.expected, Path(case.file).name)
            print(f"{case.name}: {line}")
            assert "wait" not in line, line
        except AssertionError as exc:
            failures.append(f"{case.name}: {exc}")
    assert not failures, "\n\n".join(failures)
