"""The tokenizer and its shards are one unit, and every model knows which tokenizer it was
trained with (issue 32: "outputs that belong together are written together").

- tokenize killed (SIGKILL, SIGINT) anywhere in its run leaves the complete old pair or the
  complete new pair; a kill inside the swap leaves a journal that readers refuse and the next
  run finishes (:mod:`lmforge.core.unit`);
- pretrain, finetune, evaluate, generate and export refuse a tokenizer that does not match in
  one line naming both files and the stage to re-run (:mod:`lmforge.data.pairing`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmforge.core.config import Config, validate
from lmforge.core.errors import UserError
from lmforge.core.unit import atomic_dirs, interrupted_commit, recover
from lmforge.data.pairing import KEY, tokenizer_digest

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def tiny_config(workdir: Path, *overrides: str) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        raw = compose(
            "config",
            overrides=["experiment=tiny", f"logger.tracking_uri=sqlite:///{workdir}/mlflow.db", *overrides],
        )
    return validate(raw)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYDRA_FULL_ERROR": "0"}


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lmforge: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


# --- the refusals, on hand-made artifacts (no training) ------------------------------------------


def write(path: Path, payload) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def workspace(root: Path) -> str:
    """``data/tokenizer`` and ``data/shards`` that belong together (no real ids: every check
    answers before a shard is read); return the tokenizer's digest."""
    tokenizer = write(root / "data/tokenizer/tokenizer.json", '{"model": "new"}')
    digest = tokenizer_digest(tokenizer)
    specials = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    write(
        root / "data/shards/meta.json",
        {"vocab_size": 512, "special_ids": specials, "labels": ["a", "b"], "splits": {}, KEY: digest},
    )
    return digest


def model_folder(folder: Path, task: str | None, recorded: str | None, tokenizer: str) -> None:
    """A finetuned (``task``) or pretrained (None) folder that records ``recorded`` and holds
    a ``tokenizer.json`` copy of ``tokenizer``."""
    if task is None:
        write(folder / "config.json", {"vocab_size": 512})
        write(folder / "encoder.pt", "")
        write(folder / "lm.pt", "")
        write(folder / "meta.json", {"enabled": True, KEY: recorded})
    else:
        write(folder / "config.json", {"task": task, KEY: recorded})
        write(folder / "model.pt", "")
        write(folder / "meta.json", {"mlflow_run_id": "x"})
    write(folder / "tokenizer.json", tokenizer)


def refused(call, *names: str) -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    return message


def test_pretrain_and_finetune_refuse_shards_of_another_tokenizer(tmp_path) -> None:
    from lmforge import finetune, pretrain

    workspace(tmp_path)
    write(tmp_path / "data/tokenizer/tokenizer.json", '{"model": "other"}')  # replaced alone
    cfg = tiny_config(tmp_path)
    with working_dir(tmp_path):
        for stage in (pretrain, finetune):
            refused(
                lambda stage=stage: stage.run(cfg),
                "data/tokenizer/tokenizer.json",
                "data/shards/meta.json",
                "dvc repro tokenize",
            )


def test_finetune_refuses_an_encoder_pretrained_with_another_tokenizer(tmp_path) -> None:
    from lmforge import finetune

    workspace(tmp_path)
    write(tmp_path / "models/pretrained/meta.json", {"enabled": True, KEY: "0" * 64})
    cfg = tiny_config(tmp_path)
    with working_dir(tmp_path):
        refused(
            lambda: finetune.run(cfg),
            "models/pretrained/meta.json",
            "data/shards/meta.json",
            "dvc repro pretrain",
        )


def test_shards_without_a_digest_or_half_swapped_are_refused(tmp_path) -> None:
    from lmforge.lit.workspace import shard_meta

    workspace(tmp_path)
    cfg = tiny_config(tmp_path)
    with working_dir(tmp_path):
        shard_meta(cfg)  # the pair belongs together
        (tmp_path / "data/.tokenizer.unit.json").write_text('{"moves": []}')
        refused(lambda: shard_meta(cfg), "half replaced", "dvc repro tokenize")
        (tmp_path / "data/.tokenizer.unit.json").unlink()
        meta = json.loads((tmp_path / "data/shards/meta.json").read_text())
        write(tmp_path / "data/shards/meta.json", {k: v for k, v in meta.items() if k != KEY})
        refused(lambda: shard_meta(cfg), "records no tokenizer digest", "dvc repro tokenize")


def test_evaluate_refuses_a_model_of_another_tokenizer(tmp_path) -> None:
    from lmforge import evaluate

    digest = workspace(tmp_path)
    folder = tmp_path / "models/finetuned"
    cfg = tiny_config(tmp_path)
    with working_dir(tmp_path):
        # Its own tokenizer copy is not the one it was trained with.
        model_folder(folder, "classification", digest, '{"model": "other"}')
        refused(
            lambda: evaluate.run(cfg),
            "models/finetuned/tokenizer.json",
            "models/finetuned/config.json",
            "dvc repro finetune",
        )
        # Consistent in itself, but trained with another tokenizer than the shards'.
        other = '{"model": "older"}'
        model_folder(folder, "classification", hashlib.sha256(other.encode()).hexdigest(), other)
        refused(
            lambda: evaluate.run(cfg),
            "models/finetuned/config.json",
            "data/shards/meta.json",
            "dvc repro finetune",
        )


def test_generate_and_export_refuse_a_folder_whose_tokenizer_is_not_its_own(tmp_path, capsys) -> None:
    from lmforge import export, generate

    digest = workspace(tmp_path)
    finetuned, pretrained = tmp_path / "models/finetuned", tmp_path / "models/pretrained"
    model_folder(finetuned, "text2text", digest, '{"model": "other"}')
    model_folder(pretrained, None, digest, '{"model": "other"}')
    with working_dir(tmp_path):
        refused(
            lambda: generate.run(tiny_config(tmp_path, "generate.prompt=x")),
            "models/finetuned/tokenizer.json",
            "models/finetuned/config.json",
            "dvc repro finetune",
        )
        refused(
            lambda: generate.run(
                tiny_config(tmp_path, "generate.prompt=x", "generate.model=models/pretrained")
            ),
            "models/pretrained/tokenizer.json",
            "models/pretrained/meta.json",
            "dvc repro pretrain",
        )
        for folder, rerun in ((finetuned, "finetune"), (pretrained, "pretrain")):
            assert export.main([str(folder), str(tmp_path / "hf")]) == 2
            line = one_line_error(capsys.readouterr().err)
            assert f"{folder.name}/tokenizer.json" in line and f"dvc repro {rerun}" in line
            assert not (tmp_path / "hf").exists()


def test_model_folders_written_before_digests_are_accepted_unchecked(tmp_path) -> None:
    from lmforge.data.pairing import check_model_folder
    from lmforge.lit.workspace import check_model_shards

    workspace(tmp_path)
    folder = tmp_path / "models/finetuned"
    model_folder(folder, "classification", None, '{"model": "anything"}')
    cfg = tiny_config(tmp_path)
    with working_dir(tmp_path):
        assert check_model_folder(folder, "finetune") is None
        check_model_shards(
            folder, json.loads((tmp_path / "data/shards/meta.json").read_text()), cfg, "finetune"
        )


def test_a_refusal_is_one_line_and_exit_code_2(tmp_path) -> None:
    workspace(tmp_path)
    write(tmp_path / "data/tokenizer/tokenizer.json", '{"model": "other"}')
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmforge.finetune",
            "experiment=tiny",
            f"logger.tracking_uri=sqlite:///{tmp_path}/m.db",
        ],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "dvc repro tokenize" in one_line_error(done.stderr)


# --- the unit: a kill inside the swap -------------------------------------------------------------

# Writes two folders as one unit; SIGKILLs itself at the N-th rename of the swap (N > renames:
# just before the journal is removed), so every instant of the window is hit.
KILL_IN_SWAP = """
import os, signal, sys
from pathlib import Path
from lmforge.core.unit import atomic_dirs

n, calls = int(sys.argv[1]), [0]
rename, unlink = Path.rename, Path.unlink

def kill_at(name, original):
    def wrapped(self, *args, **kwargs):
        if name == "unlink" and not self.name.endswith(".unit.json"):
            return original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)
    return wrapped

with atomic_dirs("tokenizer", "shards") as (tok, shards):
    (tok / "tokenizer.json").write_text("new")
    (shards / "meta.json").write_text("new")
    Path.rename, Path.unlink = kill_at("rename", rename), kill_at("unlink", unlink)
"""


def pair(root: Path) -> tuple[str | None, str | None]:
    read = lambda p: p.read_text() if p.is_file() else None  # noqa: E731
    return read(root / "tokenizer/tokenizer.json"), read(root / "shards/meta.json")


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_a_kill_inside_the_swap_is_refused_then_finished(tmp_path, kill_at) -> None:
    for name in ("tokenizer", "shards"):
        write(tmp_path / name / ("tokenizer.json" if name == "tokenizer" else "meta.json"), "old")
    script = tmp_path / "kill.py"
    script.write_text(KILL_IN_SWAP)
    done = subprocess.run([sys.executable, str(script), str(kill_at)], cwd=tmp_path, env=env(), timeout=60)
    assert done.returncode == -signal.SIGKILL
    # Killed after the commit point: whatever is on disk, the journal says so, readers refuse ...
    assert interrupted_commit(tmp_path / "tokenizer", tmp_path / "shards")
    # ... and the next run (recover, which atomic_dirs starts with) finishes the new pair.
    recover(tmp_path / "tokenizer", tmp_path / "shards")
    assert pair(tmp_path) == ("new", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kill.py", "shards", "tokenizer"]


def test_a_failure_before_the_swap_leaves_the_old_pair(tmp_path) -> None:
    for name in ("tokenizer", "shards"):
        write(tmp_path / name / ("tokenizer.json" if name == "tokenizer" else "meta.json"), "old")
    with (
        pytest.raises(RuntimeError),
        atomic_dirs(tmp_path / "tokenizer", tmp_path / "shards") as (tok, shards),
    ):
        (tok / "tokenizer.json").write_text("new")
        raise RuntimeError("encoding failed")
    assert pair(tmp_path) == ("old", "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "tokenizer"]


# --- the stage, killed at a dozen points of its run -----------------------------------------------


def corpus(path: Path, records: int, seed: int = 0) -> None:
    """A labelled CSV of random pseudo-words, large enough that encoding takes seconds."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("sentence,label\n")
        for i in range(records):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
            handle.write(f"{text} {i},{'pos' if rng.random() < 0.5 else 'neg'}\n")


def snapshot(tokenizer: Path, shards: Path) -> dict[str, str]:
    """Every file of the pair with its sha256 (a complete pair is exactly one snapshot)."""
    files = {}
    for folder in (tokenizer, shards):
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    files[f"{folder.name}/{path.relative_to(folder)}"] = hashlib.sha256(
                        path.read_bytes()
                    ).hexdigest()
    return files


def racing(check) -> bool:
    """``check()`` on folders the running stage renames and removes under it."""
    try:
        return check()
    except FileNotFoundError:
        return False


def run_stage(workdir: Path, name: str, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"lmforge.{name}", *overrides],
        cwd=workdir,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.ci
def test_tokenize_killed_anywhere_leaves_the_old_or_the_new_pair(tmp_path) -> None:
    from lmforge.lit.workspace import shard_meta

    started = time.monotonic()
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    corpus(tmp_path / "task.csv", 12_000)
    base = [
        "experiment=tiny",
        "trainer.num_threads=1",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "data.source.kind=local",
        f"data.source.path={tmp_path / 'task.csv'}",
        "data.source.text_columns=[sentence]",
        "data.source.label_column=label",
    ]
    old, new = [*base, "tokenizer.vocab_size=300"], [*base, "tokenizer.vocab_size=476"]
    for name in ("collect", "prepare"):
        assert run_stage(tmp_path, name, *base).returncode == 0
    tokenizer, shards = tmp_path / "data/tokenizer", tmp_path / "data/shards"
    assert run_stage(tmp_path, "tokenize", *old).returncode == 0
    old_pair = snapshot(tokenizer, shards)
    saved = tmp_path / "saved"
    for folder in (tokenizer, shards):
        shutil.copytree(folder, saved / folder.name)
    # The new pair, made apart: what a finished run leaves (BPE trains deterministically).
    began = time.monotonic()
    apart = [f"paths.tokenizer={tmp_path}/new/tokenizer", f"paths.shards={tmp_path}/new/shards"]
    assert run_stage(tmp_path, "tokenize", *new, *apart).returncode == 0
    duration = time.monotonic() - began
    new_pair = {k: v for k, v in snapshot(tmp_path / "new/tokenizer", tmp_path / "new/shards").items()}
    assert new_pair != old_pair

    cfg = tiny_config(tmp_path, *base)
    data = tmp_path / "data"
    size = sum(p.stat().st_size for p in (tmp_path / "new/shards").rglob("*") if p.is_file())

    def written() -> int:  # bytes of shards the running stage has written so far
        return sum(p.stat().st_size for p in data.glob(".*shards.tmp-*/**/*") if p.is_file())

    # Kill points spread over the run, as events (robust to a loaded machine): start-up, the
    # temporaries made, the tokenizer saved, the shards a tenth ... nine tenths written, the
    # shards' meta.json written, the commit journal, and the run over.
    points = [
        ("start-up", lambda: False),
        ("temporaries made", lambda: any(data.glob(".tokenizer.tmp-*"))),
        ("tokenizer saved", lambda: any(data.glob(".tokenizer.tmp-*/tokenizer.json"))),
        *((f"shards {f:.0%} written", lambda f=f: written() > f * size) for f in (0.1, 0.3, 0.5, 0.7, 0.9)),
        ("shards' meta.json written", lambda: any(data.glob(".*shards.tmp-*/meta.json"))),
        ("journal written", lambda: (data / ".tokenizer.unit.json").exists()),
        ("run over", lambda: False),
    ]
    killed_at = time.monotonic()
    outcomes = []
    for i, (point, reached) in enumerate(points):
        signum = signal.SIGKILL if i % 2 == 0 else signal.SIGINT
        victim = subprocess.Popen(
            [sys.executable, "-m", "lmforge.tokenize", *new],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + (0.5 if point == "start-up" else 120)
        while victim.poll() is None and time.monotonic() < deadline and not racing(reached):
            time.sleep(0.002)
        if victim.poll() is None:
            victim.send_signal(signum)
        _, err = victim.communicate(timeout=120)
        on_disk = snapshot(tokenizer, shards)
        journal = interrupted_commit(tokenizer, shards)
        if journal:  # killed inside the swap: refused, and finished by the next run
            with working_dir(tmp_path):
                refused(lambda: shard_meta(cfg), "half replaced", "dvc repro tokenize")
            recover(tokenizer, shards)
            on_disk = snapshot(tokenizer, shards)
            assert on_disk == new_pair
        assert on_disk in (old_pair, new_pair), f"mixed pair after {signum.name} at {point}"
        state = "old" if on_disk == old_pair else "new"
        if victim.returncode == 128 + signal.SIGINT:  # lmforge's handler ran: what it says is true
            assert state == "old" and "outputs were left unchanged" in one_line_error(err)
        if victim.returncode == 0:
            assert state == "new"
        with working_dir(tmp_path):
            assert shard_meta(cfg)[KEY] == tokenizer_digest(tokenizer / "tokenizer.json")
        outcomes.append((point, signum.name, victim.returncode, state, bool(journal)))
        if state == "new":
            for folder in (tokenizer, shards):
                shutil.rmtree(folder)
                shutil.copytree(saved / folder.name, folder)
    states = {o[3] for o in outcomes}
    assert states == {"old", "new"}, outcomes  # kills landed during the run, and after it

    finetuned = time.monotonic()
    # The real finetune runs on the pair a kill left (old: still matching) ...
    quick = ["finetune.max_epochs=1", "finetune.max_len=16", "finetune.batch_size=256"]
    assert run_stage(tmp_path, "pretrain", *old, "pretrain.enabled=false").returncode == 0
    done = run_stage(tmp_path, "finetune", *old, *quick)
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "models/finetuned/config.json").read_text())
    assert config[KEY] == tokenizer_digest(tokenizer / "tokenizer.json")
    assert config["model"]["vocab_size"] == json.loads((shards / "meta.json").read_text())["vocab_size"]
    # ... and refuses, in one line, the tokenizer swapped in without its shards (what tokenize
    # used to leave behind after an interrupt).
    shutil.copy(tmp_path / "new/tokenizer/tokenizer.json", tokenizer / "tokenizer.json")
    done = run_stage(tmp_path, "finetune", *new, *quick)
    assert done.returncode == 2
    assert "dvc repro tokenize" in one_line_error(done.stderr)
    print(
        f"\nkills: {outcomes}\ntokenize {duration:.1f} s; the kills {finetuned - killed_at:.0f} s; "
        f"whole test {time.monotonic() - started:.0f} s"
    )
