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


def files_under(workdir: Path, *folders: str) -> dict[str, float]:
    """``{relative path: mtime}`` of every file under ``folders`` (hidden temporaries included)."""
    return {
        p.relative_to(workdir).as_posix(): p.stat().st_mtime
        for folder in folders
        for p in sorted((workdir / folder).rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.ci
def test_three_tasks_in_one_workspace_leave_only_their_own_outputs(tmp_path: Path) -> None:
    import time

    from lmforge import collect, evaluate, finetune, prepare, pretrain, tokenize
    from test_tagging import pos_sentences, write_conllu
    from test_text2text import LEXICON, sentences, write_pair

    work = tmp_path / "project"
    (work / "corpus").mkdir(parents=True)
    (work / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    write_jsonl(work / "corpus" / "texts.jsonl", classification_rows(160))
    write_conllu(work / "corpus" / "train.conllu", pos_sentences(120, 0))
    write_conllu(work / "corpus" / "test.conllu", pos_sentences(20, 1))
    write_pair(work / "corpus" / "train", ("de", "en"), sentences(150, 0, LEXICON))
    write_pair(work / "corpus" / "val", ("de", "en"), sentences(20, 1, LEXICON))
    common = ["pretrain.enabled=false", "finetune.max_epochs=1", "logger.registered_model=null"]
    runs = {
        "classification": [
            "data.source.kind=local",
            f"data.source.path={work / 'corpus/texts.jsonl'}",
            "data.clean.min_chars=5",
        ],
        "tagging": [
            "task=tagging",
            "data.source.kind=local",
            f"data.source.path={work / 'corpus'}",
            "+data.source.splits.train.file=train.conllu",
            "+data.source.splits.test.file=test.conllu",
            "data.clean.min_chars=1",
            "task.word_feature_buckets=64",
        ],
        "text2text": [
            "task=text2text",
            "data.source.kind=local",
            f"data.source.path={work / 'corpus'}",
            "data.source.parallel=[de,en]",
            "+data.source.splits.train.file=train",
            "+data.source.splits.test.file=val",
            "data.clean.min_chars=1",
            "task.max_source_len=24",
            "task.max_target_len=24",
            "generate.max_new_tokens=8",
        ],
    }
    # What each task's run leaves under plots/, metrics/ and models/, and nothing else.
    labelled = {
        f"plots/eval/{name}" for name in ("confusion.csv", "confusion.png", "f1.csv", "f1.png", "errors.csv")
    }
    own = {
        # Two classes: a precision-recall curve too.
        "classification": {*labelled, "plots/eval/pr.csv", "plots/eval/pr.png", "metrics/val_per_class.json"},
        "tagging": {*labelled, "metrics/val_per_tag.json"},
        "text2text": {"plots/eval/samples.csv"},
    }
    shared = {
        "plots/finetune_curves.csv",
        "plots/finetune_curves.png",
        "plots/pretrain_loss.csv",
        "metrics/finetune.json",
        "metrics/eval.json",
        "metrics/pretrain.json",
        "models/pretrained/meta.json",
        "models/finetuned/config.json",
        "models/finetuned/meta.json",
        "models/finetuned/tokenizer.json",
    }
    for task, options in runs.items():
        cfg = tiny_config(work, *options, *common)
        started = time.time()
        with working_dir(work):
            for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate):
                stage.run(cfg)
        files = files_under(work, "plots", "metrics", "models")
        weights = {p for p in files if p.startswith("models/finetuned/") and p not in shared}
        assert set(files) - weights == shared | own[task], task
        assert weights, task  # model.pt (the layout of the weights is the task's)
        # Every file was written by this run, none left by the one before.
        assert all(mtime >= started - 1 for mtime in files.values()), (task, files)
        config = json.loads((work / "models/finetuned/config.json").read_text())
        assert config["task"] == task
        meta = json.loads((work / "models/finetuned/meta.json").read_text())
        assert meta["lmforge.task"] == task
        metrics = json.loads((work / "metrics/finetune.json").read_text())
        assert metrics == {k: meta[k] for k in metrics}, task  # the same run's figures
        made_for = json.loads((work / "data/prepared/meta.json").read_text())["made_for"]
        assert made_for["task"] == task
