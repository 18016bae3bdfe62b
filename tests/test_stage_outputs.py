"""A stage owns all of its outputs: it reads only inputs made for the config it runs, and a run,
finished or not, leaves no file of another run or another task among its outputs.

Quick: the data stages refuse another run's data in one line naming the file and the stage to
re-run (a failed collect leaves the previous data/raw in place). Slow: classification, tagging
and text-to-text pipelines one after another in one workspace, each leaving only its own files
under plots/, metrics/ and models/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.core.errors import UserError
from test_pipeline import tiny_config, working_dir

WORDS = ["river", "stone", "cloud", "lamp", "paper", "window", "garden", "little", "bright", "quiet"]


def classification_rows(n: int = 120) -> list[dict]:
    def text(i: int) -> str:
        return f"text {i} " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4 + i % 5))

    return [{"text": text(i), "label": i % 2} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_data_stages_refuse_another_runs_inputs(tmp_path: Path) -> None:
    from lmforge import collect, prepare, tokenize

    data = write_jsonl(tmp_path / "a.jsonl", classification_rows())
    other = write_jsonl(tmp_path / "b.jsonl", classification_rows(100))
    source = ["data.source.kind=local", "data.clean.min_chars=5"]
    cfg = tiny_config(tmp_path, *source, f"data.source.path={data}")
    with working_dir(tmp_path):
        collect.run(cfg)
        # A tagging run whose collect failed finds the classification records in data/raw.
        tagging = tiny_config(tmp_path, *source, f"data.source.path={data}", "task=tagging")
        with pytest.raises(UserError) as error:
            prepare.run(tagging)
        assert one_line(error) == (
            "data/raw/meta.json was made for task=classification, this run is task=tagging; "
            "re-run the collect stage (dvc repro collect)"
        )
        # Another source, same task.
        moved = tiny_config(tmp_path, *source, f"data.source.path={other}")
        with pytest.raises(UserError, match=r"data/raw/meta.json was made with another data.source"):
            prepare.run(moved)
        prepare.run(cfg)
        # Another cleaning config: prepare did not run for it.
        stricter = tiny_config(tmp_path, *source, f"data.source.path={data}", "data.clean.min_chars=8")
        with pytest.raises(UserError, match=r"data/prepared/meta.json was made with another data.clean"):
            tokenize.run(stricter)
        # collect ran again (another source) but prepare did not: prepared is not of this raw.
        collect.run(moved)
        with pytest.raises(UserError) as error:
            tokenize.run(moved)
        assert "re-run the prepare stage (dvc repro prepare)" in one_line(error)
        prepare.run(moved)
        tokenize.run(moved)
    made_for = json.loads((tmp_path / "data/prepared/meta.json").read_text())["made_for"]
    assert made_for["task"] == "classification" and set(made_for) == {"task", "source", "prepare", "raw_meta"}
