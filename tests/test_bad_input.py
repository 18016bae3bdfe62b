"""Bad input, end to end: every stage command answers with one line, or cleans and counts.

Each case runs ``python -m lmforge.<stage>`` as a user would, in a scratch project, and asserts
the exit code, a single stderr line naming the file/row/column and the fix, no traceback, and
that the stage's output folder was not created. The subprocesses run concurrently (they spend
their time importing). Marked slow (about 20 s of CPU) and ci (it proves the issue's battery);
the quick suite has the same cases at reader level (tests/test_sources.py, tests/test_faults.py).
docs/bad-input.md is the table of cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ci]


def project(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "conf").symlink_to(ROOT / "conf")
    return tmp


def run(workdir: Path, stage: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", f"lmforge.{stage}", *overrides],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows(n: int, label: str = "a") -> str:
    return "".join(f"document number {i} has enough words to keep,{label}\n" for i in range(n))


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def parquet_bytes(table: dict) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(table), buffer)
    return buffer.getvalue()


@dataclass
class Case:
    """A bad input for collect: the file(s) to write, extra overrides, what stderr must say."""

    name: str
    files: dict[str, str | bytes]  # relative path -> content; a path ending in / is a folder
    path: str
    expected: str
    overrides: tuple[str, ...] = ()


VALID_CSV = "text,label\n" + rows(3)
CASES = [
    Case("missing path", {}, "nothing.csv", "nothing.csv: no such file or folder; check the path"),
    Case("empty file", {"empty.csv": ""}, "empty.csv", "empty.csv: file is empty; remove it or fill it"),
    Case("empty folder", {"data/": ""}, "data", "data: folder holds no supported files"),
    Case("header only", {"head.csv": "text,label\n"}, "head.csv", "head.csv: file holds no records"),
    Case(
        "non-UTF-8 file",
        {"latin.csv": "text,label\ncaf\xe9 au lait,a\n".encode("latin-1")},
        "latin.csv",
        "latin.csv line 2: bytes are not valid utf-8 (byte 4 of the line); "
        "re-encode the file as utf-8 or set data.source.encoding",
    ),
    Case(
        "a few bad bytes",
        {
            "mostly.jsonl": jsonl(*[{"text": f"line {i}", "label": 1} for i in range(40)]).encode()
            + b'{"text": "\xff\xfe", "label": 1}\n'
        },
        "mostly.jsonl",
        "mostly.jsonl line 41: bytes are not valid utf-8",
    ),
    Case(
        "truncated CSV (inside quotes)",
        {"cut.csv": VALID_CSV + '"an unfinished quoted fi'},
        "cut.csv",
        "cut.csv line 5: expected 2 fields (text, label) but found 1",
    ),
    Case(
        "truncated CSV (short row)",
        {"short.csv": VALID_CSV + "half a row"},
        "short.csv",
        "short.csv line 5: expected 2 fields (text, label) but found 1",
    ),
    Case(
        "truncated TSV",
        {"cut.tsv": "text\tlabel\nfine text\ta\nhalf"},
        "cut.tsv",
        "cut.tsv line 3: expected 2 fields",
    ),
    Case(
        "truncated JSONL",
        {"cut.jsonl": jsonl({"text": "x", "label": 1}) + '{"text": "y", "la'},
        "cut.jsonl",
        "cut.jsonl line 2: invalid JSON",
    ),
    Case(
        "truncated parquet",
        {"cut.parquet": parquet_bytes({"text": ["a"] * 50, "label": [1] * 50})[:-40]},
        "cut.parquet",
        "cut.parquet: not a readable parquet file",
    ),
    Case(
        "header without the text column",
        {"cols.csv": "sentence,label\nhello,a\n"},
        "cols.csv",
        "cols.csv: header has no column 'text'; available: 'sentence', 'label'",
    ),
    Case(
        "header without the label column",
        {"nolab.csv": "text,target\nhello,a\n"},
        "nolab.csv",
        "nolab.csv: header has no column 'label'",
    ),
    Case(
        "empty label",
        {"gap.csv": "text,label\nhello,a\nworld,\n"},
        "gap.csv",
        "gap.csv line 3: column 'label' is empty; fill it or drop the row",
    ),
    Case(
        "NaN text in JSONL",
        {"nan.jsonl": '{"text": NaN, "label": 1}\n'},
        "nan.jsonl",
        "nan.jsonl line 1: 'text' is float, not a string",
    ),
    Case(
        "NaN label in JSONL",
        {"nanl.jsonl": '{"text": "a", "label": NaN}\n'},
        "nanl.jsonl",
        "nanl.jsonl line 1: 'label' is float nan; labels must be integers or strings",
    ),
    Case(
        "label outside label_map",
        {"map.csv": "text,label\nfine,pos\nbad,neutral\n"},
        "map.csv",
        "map.csv:3: label 'neutral' is not in data.source.label_map (neg, pos); add it to the map",
        ("data.source.label_map={pos: 1, neg: 0}",),
    ),
    Case("unsupported extension", {"data.xlsx": "x"}, "data.xlsx", "data.xlsx: unsupported extension"),
    # Text-to-text sources.
    Case(
        "parallel files of different lengths",
        {"train.de": "Hallo\nWelt\n", "train.en": "Hello\n"},
        "train",
        "train.de has 2 lines but train.en has 1; parallel files must be line-aligned",
        ("data.source.parallel=[de,en]",),
    ),
    Case(
        "missing target column",
        {"pairs.csv": "de,en\nHallo,Hello\n"},
        "pairs.csv",
        "pairs.csv: no target column 'fr'; available: 'de', 'en'; set data.source.target_column",
        ("data.source.text_columns=[de]", "data.source.target_column=fr"),
    ),
    Case(
        "target that is not text",
        {"pairs.jsonl": jsonl({"de": "Hallo", "en": "Hello"}, {"de": "Eins", "en": 1})},
        "pairs.jsonl",
        "pairs.jsonl line 2: target 'en' is int 1, not a string",
        ("data.source.text_columns=[de]", "data.source.target_column=en"),
    ),
]


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    base = tmp_path_factory.mktemp("bad")

    def one(index: int, case: Case) -> tuple[Path, subprocess.CompletedProcess]:
        workdir = project(base / f"case{index}")
        for name, content in case.files.items():
            target = workdir / name
            if name.endswith("/"):
                target.mkdir(parents=True)
                (target / "notes.md").write_text("not data")
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        return workdir, run(
            workdir, "collect", "data.source.kind=local", f"data.source.path={case.path}", *case.overrides
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda pair: one(*pair), enumerate(CASES)))
    return {case.name: result for case, result in zip(CASES, done, strict=True)}


def assert_one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lmforge: error: ")
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_collect_rejects_bad_input_in_one_line_and_writes_nothing(collected, case: Case) -> None:
    workdir, done = collected[case.name]
    assert_one_line_error(done, case.expected)
    data = workdir / "data"
    leftovers = sorted(p.name for p in data.iterdir()) if data.is_dir() else []
    assert not (workdir / "data/raw").exists() and not any(".raw.tmp" in n for n in leftovers)


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    done = run(
        project(tmp_path), "collect", "data.source.kind=local", "data.source.path=nope.csv", "--verbose"
    )
    assert done.returncode != 0 and "Traceback" in done.stderr and "UserError" in done.stderr


def test_the_documented_encoding_fix_reads_the_file(tmp_path: Path) -> None:
    workdir = project(tmp_path)
    (workdir / "latin.csv").write_bytes("text,label\ncafé au lait,a\n".encode("latin-1"))
    done = run(
        workdir,
        "collect",
        "data.source.kind=local",
        "data.source.path=latin.csv",
        "data.source.encoding=latin-1",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((workdir / "data/raw/records.jsonl").read_text())
    assert record["text"] == "café au lait"


def collect_then_prepare(
    workdir: Path, content: str, *overrides: str
) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    (workdir / "in.csv").write_text(content, encoding="utf-8")
    source = [
        "data.source.kind=local",
        "data.source.path=in.csv",
        "data.clean.min_chars=5",
        "data.clean.max_chars=200",
        *overrides,
    ]
    return run(workdir, "collect", *source), run(workdir, "prepare", *source)


def test_single_class_training_split_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    workdir = project(tmp_path)
    collect, prepare = collect_then_prepare(workdir, "text,label\n" + rows(30, "only"))
    assert collect.returncode == 0, collect.stderr
    assert_one_line_error(
        prepare, "the train split holds one class only ('only'); a classifier needs at least two labels"
    )
    assert not (workdir / "data/prepared").exists()


def test_text_column_empty_for_most_rows_is_an_error_naming_file_and_column(tmp_path: Path) -> None:
    workdir = project(tmp_path)
    # The text is in 'body'; 'title' (the configured column) is filled in 5 rows of 30 only.
    content = "title,body,label\n" + "".join(
        f"{'headline number ' + str(i) if i < 5 else ''},body text of row {i} here,{'ab'[i % 2]}\n"
        for i in range(30)
    )
    collect, prepare = collect_then_prepare(workdir, content, "data.source.text_columns=[title]")
    assert collect.returncode == 0, collect.stderr
    assert_one_line_error(
        prepare,
        "in.csv: text column(s) title are empty in 25 of 30 rows (83%); "
        "point data.source.text_columns at the column(s) that hold the text",
    )
    assert not (workdir / "data/prepared").exists()


def test_dirty_rows_are_dropped_counted_by_reason_and_balance(tmp_path: Path) -> None:
    workdir = project(tmp_path)
    content = (
        "text,label\n"
        + rows(20, "a")
        + rows(20, "b").replace("document", "paper")
        + "   ,a\n"  # whitespace only
        + '"\t \n ",b\n'  # whitespace and newlines only
        + "tiny,a\n"  # too short (min_chars=5)
        + f"{'long ' * 100},b\n"  # too long (max_chars=200)
        + "document number 1 has enough words to keep,a\n"  # exact duplicate
        + "document   number 1 has ENOUGH words to keep,a\n".replace("ENOUGH", "enough")
        + "document number 2 has enough words to keep,b\n"
    )  # same text, other label
    collect, prepare = collect_then_prepare(workdir, content)
    assert collect.returncode == 0 and prepare.returncode == 0, collect.stderr + prepare.stderr
    report = json.loads((workdir / "data/prepared/cleaning.json").read_text())
    assert report["dropped"] == {
        "duplicate": 2,
        "duplicate_label_conflict": 1,
        "empty": 2,
        "too_long": 1,
        "too_short": 1,
    }
    assert report["input_rows"] == 47 == report["kept"] + report["dropped_total"]
    assert "47 rows in = 40 kept + 7 dropped" in prepare.stdout
    texts = {
        s: {
            json.loads(line)["text"]
            for line in (workdir / f"data/prepared/{s}.jsonl").read_text().splitlines()
        }
        for s in ("train", "val", "test")
    }
    assert sum(map(len, texts.values())) == 40
    assert not (
        texts["train"] & texts["test"] or texts["train"] & texts["val"] or texts["val"] & texts["test"]
    )


def test_stages_without_their_input_name_the_missing_stage(tmp_path: Path) -> None:
    workdir = project(tmp_path)
    expected = {
        "prepare": "data/raw/records.jsonl is missing; run the collect stage first",
        "tokenize": "data/prepared is incomplete; run the prepare stage first",
        "pretrain": "data/shards/meta.json is missing; run the tokenize stage first",
        "evaluate": "models/finetuned/model.pt is missing; run the finetune stage first",
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(expected, pool.map(lambda s: run(workdir, s), expected), strict=True))
    for stage, message in expected.items():
        assert_one_line_error(done[stage], message)
    assert sorted(p.name for p in workdir.iterdir()) == ["conf", "outputs"]  # Hydra's log folder
