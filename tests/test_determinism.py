"""Determinism and atomic outputs of the data stages: the same raw data and config give
byte-identical prepared data, tokenizer and shards, from scratch and after a crashed attempt."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmforge import collect, prepare, tokenize
from lmforge.core.config import Config, validate

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("data/prepared", "data/tokenizer", "data/shards")


def config(workdir: Path) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        raw = compose(
            "config", overrides=["experiment=tiny", f"logger.tracking_uri=sqlite:///{workdir}/mlflow.db"]
        )
    return validate(raw)


def digests(workdir: Path) -> dict[str, str]:
    found = {}
    for folder in OUTPUTS:
        for path in sorted((workdir / folder).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(workdir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def in_dir(workdir: Path, *stages) -> None:
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for stage in stages:
            stage.run(config(workdir))
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("raw")
    in_dir(workdir, collect)
    return workdir / "data/raw"


def fresh(base: Path, raw: Path) -> Path:
    base.mkdir()
    shutil.copytree(raw, base / "data/raw")
    return base


@pytest.mark.slow
@pytest.mark.ci
def test_prepare_and_tokenize_twice_from_scratch_are_byte_identical(
    raw: Path, tmp_path: Path, monkeypatch
) -> None:
    first, second = fresh(tmp_path / "first", raw), fresh(tmp_path / "second", raw)
    in_dir(first, prepare, tokenize)
    in_dir(second, prepare, tokenize)
    want = digests(first)
    assert len(want) == 17  # 3 splits, labels, cleaning, meta; tokenizer; 3 x 3 shard files + meta
    assert digests(second) == want

    # A crash half-way through tokenize (after the tokenizer folder, inside the shards) leaves
    # no partial output; the rerun then equals the clean run byte for byte.
    crashed = fresh(tmp_path / "crashed", raw)
    in_dir(crashed, prepare)
    import lmforge.data.tokenization as tokenization

    real = tokenization.encode_to_shards
    calls = []

    def dies_on_the_second_split(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(tokenization, "encode_to_shards", dies_on_the_second_split)
    with pytest.raises(RuntimeError, match="simulated crash"):
        in_dir(crashed, tokenize)
    assert not (crashed / "data/shards").exists()
    assert [p.name for p in (crashed / "data").iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(tokenization, "encode_to_shards", real)
    in_dir(crashed, tokenize)
    assert digests(crashed) == want
