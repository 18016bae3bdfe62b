"""collect + prepare on sources with predefined splits (GLUE layout) and on the shared SST-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmforge import collect, prepare
from lmforge.core.config import Config, validate
from lmforge.core.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def sst2_config(workdir: Path, data_dir: Path, *overrides: str) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        raw = compose(
            "config",
            overrides=[
                "experiment=sst2",
                f"data.source.path={data_dir}",
                f"paths.raw={workdir}/raw",
                f"paths.prepared={workdir}/prepared",
                *overrides,
            ],
        )
    return validate(raw)


def write_glue(folder: Path) -> None:
    folder.mkdir()
    train = (
        ["label\tsentence"]
        + [f'{i % 2}\ttrain sentence number {i} , "quoted"' for i in range(200)]
        + ["1\ta sentence that is also in dev ."]
    )
    dev = ["label\tcontent", "0\ta sentence that is also in dev .", "1\tdev only sentence ."]
    (folder / "train.tsv").write_text("\n".join(train) + "\n")
    (folder / "dev.tsv").write_text("\n".join(dev) + "\n")


def test_glue_folder_keeps_dev_as_the_test_split(tmp_path: Path) -> None:
    write_glue(tmp_path / "glue")
    cfg = sst2_config(tmp_path, tmp_path / "glue")
    collect.run(cfg)
    prepare.run(cfg)
    test = list(read_jsonl(tmp_path / "prepared/test.jsonl"))
    assert [r["text"] for r in test] == ["a sentence that is also in dev .", "dev only sentence ."]
    assert [r["label"] for r in test] == ["0", "1"]
    train = [r["text"] for r in read_jsonl(tmp_path / "prepared/train.jsonl")]
    val = [r["text"] for r in read_jsonl(tmp_path / "prepared/val.jsonl")]
    assert "a sentence that is also in dev ." not in train + val, "dev text leaked into train"
    assert len(train) + len(val) == 200 and 0 < len(val) < 30
    assert '"quoted"' in train[0] or '"quoted"' in val[0]
    cleaning = json.loads((tmp_path / "prepared/cleaning.json").read_text())
    # The shared sentence is labelled 1 in train and 0 in dev: counted as a label conflict.
    assert cleaning["dropped"] == {"duplicate_label_conflict": 1}
    assert json.loads((tmp_path / "prepared/labels.json").read_text()) == [0, 1]


def test_shared_sst2_reads_in_full(shared_data_dir: Path, tmp_path: Path) -> None:
    cfg = sst2_config(tmp_path, shared_data_dir / "sst2")
    collect.run(cfg)
    prepare.run(cfg)
    raw = json.loads((tmp_path / "raw/meta.json").read_text())
    assert raw["records"] == 67_349 + 872 == raw["labelled"]
    cleaning = json.loads((tmp_path / "prepared/cleaning.json").read_text())
    assert cleaning["per_split"]["test"] == 872
    assert cleaning["input_rows"] == cleaning["kept"] + cleaning["dropped_total"]
    # Every phrase of a training sentence is a row of train.tsv: validation must hold whole
    # held-out sentences and their own phrases, never a piece of a training row.
    train = [r["text"] for r in read_jsonl(tmp_path / "prepared/train.jsonl")]
    val = [r["text"] for r in read_jsonl(tmp_path / "prepared/val.jsonl")]
    haystack = "\n".join(f" {text} " for text in train)
    inside = [text for text in val if f" {text} " in haystack]
    assert not inside, f"{len(inside)} of {len(val)} validation rows are pieces of train rows"
    assert cleaning["per_split"]["val"] > 0.03 * len(train)


def test_a_predefined_split_needs_a_file_for_local_sources(tmp_path: Path) -> None:
    from lmforge.core.errors import UserError

    write_glue(tmp_path / "glue")
    cfg = sst2_config(tmp_path, tmp_path / "glue", "data.source.kind=local", "~data.source.splits.test.file")
    with pytest.raises(UserError, match="data.source.splits.test: give `file`"):
        collect.run(cfg)
    assert not (tmp_path / "raw").exists()
