"""Faults other than bad data: config mistakes, NaN losses, crashes while saving, an unusable
MLflow store, crashed runs left RUNNING, secrets in logged params, unsafe commands and loads."""

from __future__ import annotations

import re
import socket
import sqlite3
import string
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lmforge.core.config import validate
from lmforge.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# config: impossible values stop the run at start-up, in one line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"eval": {"batch_size": 0}}, "config key 'eval.batch_size': must be positive"),
        ({"finetune": {"batch_size": 0}}, "config key 'finetune.batch_size': must be positive"),
        ({"pretrain": {"optim": {"lr": -1e-3}}}, "config key 'pretrain.optim.lr': -0.001 must be positive"),
        ({"optim": {"grad_clip": -1}}, "config key 'optim.grad_clip'"),
        ({"tokenizer": {"vocab_size": 5}}, "leaves no room beyond the special tokens"),
        ({"pretrain": {"seq_len": 512}}, "config key 'pretrain.seq_len': 512 exceeds model.max_len"),
        ({"finetune": {"max_len": 2}}, "config key 'finetune.max_len': must be at least 3"),
        ({"trainer": {"num_workers": -1}}, "config key 'trainer.num_workers'"),
        ({"trainer": {"log_every_n_steps": 0}}, "config key 'trainer.log_every_n_steps'"),
        ({"trainer": {"checkpoint_every_n_steps": -5}}, "config key 'trainer.checkpoint_every_n_steps'"),
        ({"trainer": {"accelerator": "abacus"}}, "config key 'trainer.accelerator'"),
        ({"resume": "maybe"}, "config key 'resume'"),
        ({"data": {"source": {"label_map": {}}}}, "config key 'data.source.label_map': is empty"),
        ({"data": {"source": {"max_records": 0}}}, "config key 'data.source.max_records'"),
        ({"pretrain": {"limit_val_batches": 0}}, "config key 'pretrain.limit_val_batches'"),
        ({"generate": {"rerank": -1}}, "config key 'generate.rerank': must be >= 0"),
        ({"generate": {"rerank_similarity": -2.0}}, "config key 'generate.rerank_similarity'"),
        ({"finetune": {"ensemble": 0}}, "config key 'finetune.ensemble': must be >= 1"),
        (
            {"finetune": {"ensemble": 3}, "task": {"name": "tagging"}},
            "config key 'finetune.ensemble': an ensemble or an n-gram fusion takes lmforge's own classifier",
        ),
    ],
)
def test_impossible_values_fail_in_one_line(override: dict, expected: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "params.yaml"), override)
    with pytest.raises(UserError) as info:
        validate(cfg)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# training faults: NaN loss, crash while saving a checkpoint


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)


def toy_module(poison_at: int):
    import lightning as L

    class ToyModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = Toy()

        def training_step(self, batch, batch_idx):
            loss = self.model.linear(batch[0]).pow(2).mean()
            return loss * float("nan") if self.global_step >= poison_at else loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return ToyModule()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from lmforge.lit.callbacks import AtomicCheckpointIO, StopOnNonFiniteLoss

    loader = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = L.Trainer(
        max_steps=10,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=0, save_last=True),
            StopOnNonFiniteLoss("pretrain", tmp_path, "pretrain.optim.lr"),
        ],
        default_root_dir=tmp_path,
    )
    with pytest.raises(UserError) as info:
        trainer.fit(toy_module(poison_at=3), loader)
    assert str(info.value) == (
        f"pretrain: the training loss became nan after 3 steps (epoch 0); "
        f"the last good checkpoint is kept in {tmp_path / 'last.ckpt'}; "
        "lower pretrain.optim.lr or check the data"
    )
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_a_crash_while_saving_never_corrupts_last_ckpt(tmp_path: Path) -> None:
    from lmforge.lit.callbacks import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 7, "weights": torch.ones(1000)}, target)
    # Pickling fails half-way: the big tensor is written, then the lambda cannot be.
    with pytest.raises(Exception, match="pickle|lambda"):
        io.save_checkpoint({"global_step": 8, "weights": torch.zeros(1000), "bad": lambda: 0}, target)
    assert io.load_checkpoint(target)["global_step"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoints_refuse_to_run_code(tmp_path: Path) -> None:
    import pickle

    from lmforge.lit.callbacks import AtomicCheckpointIO

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Payload()}, path, pickle_module=pickle)
    with pytest.raises(UserError, match="holds objects other than tensors and was not loaded"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_resumable_sampler_skips_exactly_the_consumed_batches() -> None:
    from lmforge.lit.resume import ResumableSampler

    uninterrupted = ResumableSampler(50, seed=3)
    uninterrupted.set_epoch(2)
    order = list(uninterrupted)
    assert sorted(order) == list(range(50))
    resumed = ResumableSampler(50, seed=3)
    resumed.skip(epoch=2, samples=20)
    resumed.set_epoch(2)
    assert list(resumed) == order[20:]
    assert list(resumed) == order  # the skip applies once, to the resumed epoch only
    resumed.set_epoch(3)
    assert list(resumed) != order


# ---------------------------------------------------------------------------------------------
# tracking faults


def test_unreachable_mlflow_server_fails_fast_in_one_line() -> None:
    from lmforge.tracking.safety import check_store

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError) as info:
        check_store(f"http://user:secret@127.0.0.1:{port}", timeout=2)
    message = str(info.value)
    assert message.startswith(f"MLflow server http://***@127.0.0.1:{port} is unreachable")
    assert "secret" not in message and "\n" not in message


@pytest.fixture
def login_server():
    """An HTTP server on 127.0.0.1 that answers like MLflow's basic-auth app: /health for
    anyone, the API only for ana with her password (403 for bob)."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    allowed = "Basic " + base64.b64encode(b"ana:right-password-1").decode()
    forbidden = "Basic " + base64.b64encode(b"bob:bobs-password-22").decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            login = self.headers.get("Authorization")
            code = 200 if self.path == "/health" or login == allowed else 403 if login == forbidden else 401
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        (
            None,
            None,
            "requires a login (HTTP 401); export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        ("ana", "wrong-password-9", "refused the credentials of user 'ana' (HTTP 401)"),
        ("bob", "bobs-password-22", "denies bob access (HTTP 403)"),
    ],
)
def test_refused_mlflow_credentials_fail_fast_in_one_line(
    login_server: str, monkeypatch, user, password, expected
) -> None:
    from lmforge.tracking.safety import check_store

    for name in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_AUTH",
    ):
        monkeypatch.delenv(name, raising=False)
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    with pytest.raises(UserError) as info:
        check_store(login_server, timeout=5)
    message = str(info.value)
    assert message.startswith(f"MLflow server {login_server} ") and expected in message
    assert "\n" not in message and (password is None or password not in message)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "right-password-1")
    check_store(login_server, timeout=5)  # the right login passes


def test_locked_sqlite_store_fails_fast_in_one_line(tmp_path: Path) -> None:
    from lmforge.tracking.safety import check_store

    db = tmp_path / "mlflow.db"
    holder = sqlite3.connect(db)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UserError, match=r"mlflow.db: database is locked \(another process"):
            check_store(f"sqlite:///{db}", timeout=0.2)
    finally:
        holder.rollback()
        holder.close()
    check_store(f"sqlite:///{db}", timeout=0.2)  # free again


def tracked_config(tmp_path: Path, **source):
    from hydra import compose, initialize_config_dir

    overrides = [
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        *(f"data.source.{k}='{v}'" for k, v in source.items()),
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=["experiment=tiny", *overrides]))


def test_a_crashing_stage_marks_its_run_failed_and_logs_no_secrets(tmp_path: Path, monkeypatch) -> None:
    from mlflow import MlflowClient

    from lmforge.tracking.runs import stage_run

    monkeypatch.setenv("HOME", str(tmp_path))  # the store lives under "home"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    cfg = tracked_config(
        tmp_path,
        kind="url",
        url="https://ana:hunter2@example.org/d.csv?token=abc",
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(RuntimeError), stage_run(cfg, "pretrain", "p1") as run:
        raise RuntimeError("boom")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    logged = client.get_run(run.info.run_id)
    assert logged.info.status == "FAILED"
    params = logged.data.params
    assert params["logger.tracking_uri"] == "sqlite:///~/mlflow.db"
    assert params["data.source.url"] == "https://***@example.org/d.csv?token=***"
    assert params["data.source.cache_dir"] == "~/cache"
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    assert str(tmp_path) not in config and "hunter2" not in config


# ---------------------------------------------------------------------------------------------
# security: what the repository tells people to run, and how it loads weights


def text_files() -> list[Path]:
    found = [ROOT / "Makefile", ROOT / "README.md", ROOT / "dvc.yaml"]
    for folder in ("src", "docs", "conf", "bench", ".ci"):
        found += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".sh", ""}
        ]
    return [p for p in found if p.is_file()]


def test_mlflow_ui_and_server_commands_bind_to_localhost() -> None:
    pattern = re.compile(r"mlflow\s+(ui|server|serve|models serve)\b[^\n`]*")
    commands = [(p, m.group(0)) for p in text_files() for m in pattern.finditer(p.read_text())]
    assert commands, "expected the Makefile's mlflow-ui target at least"
    for path, command in commands:
        if "--host" in command or "-h " in command:
            assert "127.0.0.1" in command, f"{path}: {command}"
        else:
            # `mlflow ui`/`server` default to 127.0.0.1; `models serve` does too. A bare mention in
            # prose (no options) is fine as long as it never names another host.
            assert "0.0.0.0" not in command, f"{path}: {command}"


def test_no_remote_code_and_every_torch_load_is_weights_only() -> None:
    sources = {p: p.read_text() for p in (ROOT / "src").rglob("*.py")}
    for path, text in sources.items():
        assert "trust_remote_code=True" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"


# ---------------------------------------------------------------------------------------------
# property-based: readers never fail with anything but a one-line UserError


@settings(max_examples=80, deadline=None)
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".txt"]))
def test_any_bytes_give_records_or_a_one_line_user_error(
    tmp_path_factory, content: bytes, suffix: str
) -> None:
    from lmforge.data.readers import read_local

    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(content)
    try:
        records = list(read_local(path))
    except UserError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)
    else:
        assert all(isinstance(r["text"], str) and r["source"].startswith(str(path)) for r in records)


_cell = st.text(alphabet=string.ascii_letters + string.digits + " ,\"'\t;éß中", min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_cell.filter(str.strip), _cell.filter(lambda s: s.strip() == s and s.strip())),
        min_size=1,
        max_size=20,
    )
)
def test_csv_and_jsonl_round_trip(tmp_path_factory, rows: list[tuple[str, str]]) -> None:
    import csv
    import json

    from lmforge.data.readers import read_local

    folder = tmp_path_factory.mktemp("roundtrip")
    with open(folder / "a.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    (folder / "a.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows), encoding="utf-8"
    )
    for name in ("a.csv", "a.jsonl"):
        got = [(r["text"], r["label"]) for r in read_local(folder / name)]
        assert got == rows, name


def test_signals_wait_for_a_safe_point_while_deferred() -> None:
    import os
    import signal

    from lmforge.core import interrupts

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)  # delivered, but only noted
            with pytest.raises(interrupts.Interrupted, match="SIGTERM"):
                interrupts.check()
            interrupts.check()  # raised once only
        with pytest.raises(interrupts.Interrupted, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)  # not deferred: raised at once
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["alpha beta", "alpha  beta", "gamma delta", " ", "", "x", "epsilon zeta eta", "ALPHA beta"]
            ),
            st.sampled_from([0, 1, None]),
        ),
        max_size=40,
    )
)
def test_cleaner_counts_every_drop_and_never_splits_a_text(records: list) -> None:
    from lmforge.core.config import CleanConfig, SplitConfig
    from lmforge.data.cleaning import CleaningReport, clean_and_split

    report = CleaningReport()
    kept = list(
        clean_and_split(
            ({"text": t, "label": label} for t, label in records),
            CleanConfig(min_chars=3),
            SplitConfig(0.3, 0.3, 1),
            report,
        )
    )
    assert report.input_rows == len(records) == report.kept + sum(report.dropped.values())
    splits: dict[str, str] = {}
    for split, record in kept:
        assert splits.setdefault(record["text"], split) == split
    assert len(splits) == len(kept)  # and no text twice, whatever its label
    assert set(report.dropped) <= {"empty", "too_short", "too_long", "duplicate", "duplicate_label_conflict"}


def test_texts_longer_than_the_context_are_counted_not_silently_cut() -> None:
    import numpy as np

    from lmforge.data.datasets import LabelledRecords

    class Shards:  # three labelled records of 3, 10 and 4 tokens, one unlabelled of 50
        offsets = np.array([0, 3, 13, 17, 67])
        labels = np.array([0, 1, 0, -1])
        ids = np.arange(67) + 5
        meta = {"special_ids": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}}

        def record(self, index: int):
            return self.ids[self.offsets[index] : self.offsets[index + 1]]

    records = LabelledRecords(Shards(), max_len=6)  # room for 4 tokens between [CLS] and [SEP]
    assert records.truncated == 1  # the 10-token one; the unlabelled one is not used
    assert len(records[1][0]) == 6
