"""Text-to-text data: target columns and parallel files, (text, target) cleaning, target shards,
the docsum task, multi30k from the shared data, the lead and retrieval baselines."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from lmforge import collect, prepare, tokenize
from lmforge.core.config import CleanConfig, Config, SourceConfig, SplitConfig, validate
from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from lmforge.data.cleaning import CleaningReport, clean_and_split
from lmforge.data.readers import read_local, read_parallel
from lmforge.data.sources import iter_records, read_hf, read_stdlib
from lmforge.data.stdlib import split_summary
from lmforge.tasks.text2text import stages as text2text_stages

ROOT = Path(__file__).resolve().parents[1]


# task=text2text within experiment=tiny's model.max_len.
TEXT2TEXT = ("task=text2text", "task.max_source_len=40", "task.max_target_len=20")


def config(workdir: Path, *overrides: str) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        raw = compose(
            "config",
            overrides=["experiment=tiny", f"logger.tracking_uri=sqlite:///{workdir}/mlflow.db", *overrides],
        )
    return validate(raw)


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


# ---------------------------------------------------------------------------------------------
# Sources


def write_pairs(tmp_path: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources, targets = ["ein Hund läuft", "zwei Katzen"], ["a dog runs", "two cats"]
    files = {
        "csv": tmp_path / "p.csv",
        "tsv": tmp_path / "p.tsv",
        "jsonl": tmp_path / "p.jsonl",
        "parquet": tmp_path / "p.parquet",
    }
    files["csv"].write_text("de,en\n" + "".join(f"{s},{t}\n" for s, t in zip(sources, targets, strict=True)))
    files["tsv"].write_text(
        "de\ten\n" + "".join(f"{s}\t{t}\n" for s, t in zip(sources, targets, strict=True))
    )
    files["jsonl"].write_text(
        "".join(json.dumps({"de": s, "en": t}) + "\n" for s, t in zip(sources, targets, strict=True))
    )
    pq.write_table(pa.table({"de": sources, "en": targets}), files["parquet"])
    return files


def test_target_column_reads_pairs_from_every_format(tmp_path: Path) -> None:
    for fmt, path in write_pairs(tmp_path).items():
        records = list(read_local(path, text_columns=["de"], label_column=None, target_column="en"))
        assert [(r["text"], r["target"], r["label"]) for r in records] == [
            ("ein Hund läuft", "a dog runs", None),
            ("zwei Katzen", "two cats", None),
        ], fmt
        assert records[1]["source"] == f"{path}:{3 if fmt in ('csv', 'tsv') else 2}"
    # Through the dispatcher as collect calls it, and through the HF loader on a local file.
    via_dispatch = list(
        iter_records(
            "local", path=str(tmp_path / "p.csv"), text_columns=["de"], label_column=None, target_column="en"
        )
    )
    assert via_dispatch[0]["target"] == "a dog runs"
    # As collect reads the config: the default label_column ("label") does not apply to pairs.
    for path in write_pairs(tmp_path).values():
        source = SourceConfig(kind="local", path=str(path), text_columns=["de"], target_column="en")
        assert [r["target"] for r in collect.iter_source(source)] == ["a dog runs", "two cats"]
    hf = list(
        read_hf(
            str(tmp_path / "p.parquet"),
            split="train",
            text_columns=["de"],
            label_column=None,
            target_column="en",
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert [(r["text"], r["target"]) for r in hf] == [
        ("ein Hund läuft", "a dog runs"),
        ("zwei Katzen", "two cats"),
    ]


def test_missing_or_non_text_target_is_one_line_naming_file_and_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = write_pairs(tmp_path)
    for fmt in ("csv", "jsonl", "parquet"):
        with pytest.raises(UserError) as err:
            list(read_local(files[fmt], text_columns=["de"], label_column=None, target_column="fr"))
        message = str(err.value)
        assert str(files[fmt]) in message and "no target column 'fr'" in message
        assert "available: 'de', 'en'" in message and "data.source.target_column" in message
        assert "\n" not in message
    numbers = tmp_path / "n.jsonl"
    numbers.write_text('{"de": "eins", "en": "one"}\n{"de": "zwei", "en": 2}\n')
    with pytest.raises(UserError, match=rf"{numbers} line 2: target 'en' is int 2, not a string"):
        list(read_local(numbers, text_columns=["de"], label_column=None, target_column="en"))
    ints = tmp_path / "n.parquet"
    pq.write_table(pa.table({"de": ["eins"], "en": [1]}), ints)
    with pytest.raises(UserError, match=rf"{ints} row 1: target 'en' is int 1, not a string"):
        list(read_local(ints, text_columns=["de"], label_column=None, target_column="en"))


def test_parallel_files_pair_lines_and_reject_different_lengths(tmp_path: Path) -> None:
    (tmp_path / "train.de").write_text("Ein Hund.\nZwei Katzen.\n\n")
    (tmp_path / "train.en").write_text("A dog.\nTwo cats.\nThree birds.")  # no final newline
    records = list(read_parallel(tmp_path / "train", ["de", "en"]))
    assert [(r["text"], r["target"]) for r in records] == [
        ("Ein Hund.", "A dog."),
        ("Zwei Katzen.", "Two cats."),
        ("", "Three birds."),
    ]
    assert records[2]["source"] == f"{tmp_path / 'train.de'}:3"
    (tmp_path / "val.de").write_text("a\nb\nc\n")
    (tmp_path / "val.en").write_text("a\nb\n")
    with pytest.raises(UserError) as err:
        list(read_local(tmp_path / "val", parallel=["de", "en"]))
    assert str(err.value).startswith(
        f"{tmp_path / 'val.de'} has 3 lines but "
        f"{tmp_path / 'val.en'} has 2; parallel files must be "
        "line-aligned"
    )
    with pytest.raises(UserError, match=r"val\.fr: no such file"):
        list(read_parallel(tmp_path / "val", ["de", "fr"]))


def test_parallel_splits_read_file_stems_under_path(tmp_path: Path) -> None:
    for stem, n in (("train", 3), ("val", 2)):
        for lang in ("de", "en"):
            (tmp_path / f"{stem}.{lang}").write_text("".join(f"{lang} {stem} {i}\n" for i in range(n)))
    source = SourceConfig(
        kind="local",
        path=str(tmp_path),
        parallel=["de", "en"],
        splits={"train": {"file": "train"}, "test": {"file": "val"}},
    )
    records = list(collect.iter_source(source))
    assert [(r["split"], r["text"], r["target"]) for r in records] == [
        ("test", "de val 0", "en val 0"),
        ("test", "de val 1", "en val 1"),
        ("train", "de train 0", "en train 0"),
        ("train", "de train 1", "en train 1"),
        ("train", "de train 2", "en train 2"),
    ]
    reverse = SourceConfig(kind="local", path=str(tmp_path / "train"), parallel=["en", "de"])
    assert next(collect.iter_source(reverse))["target"] == "de train 0"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"kind": "local", "path": "x", "parallel": ["de"]}, "two different file suffixes"),
        ({"kind": "local", "path": "x", "parallel": ["de", "de"]}, "two different file suffixes"),
        ({"kind": "hf", "name": "x", "parallel": ["de", "en"]}, "set data.source.kind=local"),
        ({"kind": "local", "path": "x", "target_column": "text"}, "is also in data.source.text_columns"),
        ({"kind": "stdlib", "target_column": "title"}, "one target, 'summary' (docsum)"),
        (
            {"kind": "local", "path": "x", "target_column": "en", "label_map": {"a": 1}},
            "text-to-text records have no labels",
        ),
    ],
)
def test_config_rejects_inconsistent_text_to_text_keys(options: dict, expected: str) -> None:
    with pytest.raises(UserError, match=re.escape(expected)):
        SourceConfig(**options)


# ---------------------------------------------------------------------------------------------
# Cleaning


def test_cleaning_pairs_counts_drops_and_keeps_other_translations() -> None:
    records = [
        {"text": "Ein  Hund\u00a0läuft.", "target": " A dog runs. "},
        {"text": "Ein Hund läuft.", "target": "A dog runs."},  # same pair: duplicate
        {"text": "Ein Hund läuft.", "target": "A dog is running."},  # another translation: kept
        {"text": "   ", "target": "Nothing."},  # empty source
        {"text": "Eine Katze.", "target": " \t"},  # empty target
        {"text": "Eine Maus.", "target": None},  # missing target
        {"text": "Ja.", "target": "Yes."},  # too short (source < 5)
        {"text": "Ein Vogel singt.", "target": "x" * 300},  # target over max_chars
        {"text": "Ein Pferd.", "target": "A horse."},
    ]
    report = CleaningReport()
    kept = list(
        clean_and_split(
            records,
            CleanConfig(min_chars=5, max_chars=200),
            SplitConfig(val_fraction=0.3, test_fraction=0.3),
            report,
        )
    )
    assert [(r["text"], r["target"]) for _, r in kept] == [
        ("Ein Hund läuft.", "A dog runs."),
        ("Ein Hund läuft.", "A dog is running."),
        ("Ein Pferd.", "A horse."),
    ]
    assert kept[0][0] == kept[1][0], "one source, one split"
    assert dict(report.dropped) == {
        "duplicate": 1,
        "empty": 1,
        "empty_target": 2,
        "too_short": 1,
        "too_long_target": 1,
    }
    assert report.input_rows == 9 == report.kept + sum(report.dropped.values())


def test_prepare_writes_pairs_without_labels(tmp_path: Path) -> None:
    rows = [
        {"text": f"source sentence number {i}", "target": f"target {i}", "source": f"f:{i}"}
        for i in range(40)
    ] + [{"text": "source sentence number 1", "target": ""}]
    cfg = config(tmp_path, *TEXT2TEXT, "data.clean.min_chars=5")
    with working_dir(tmp_path):
        Path(cfg.paths.raw).mkdir(parents=True)
        (Path(cfg.paths.raw) / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (Path(cfg.paths.raw) / "meta.json").write_text(json.dumps({"records": len(rows)}))
        prepare.run(cfg)
        assert json.loads(Path("data/prepared/labels.json").read_text()) == []
        report = json.loads(Path("data/prepared/cleaning.json").read_text())
        kept = [r for s in ("train", "val", "test") for r in read_jsonl(Path(f"data/prepared/{s}.jsonl"))]
    assert report["dropped"] == {"empty_target": 1} and report["kept"] == 40 == len(kept)
    assert {r["target"] for r in kept} == {f"target {i}" for i in range(40)}


def test_prepare_stops_when_most_targets_are_empty(tmp_path: Path) -> None:
    rows = [{"text": f"source sentence number {i}", "target": "" if i % 4 else "t"} for i in range(40)]
    cfg = config(
        tmp_path,
        "data.source.kind=local",
        "data.source.path=pairs.csv",
        "data.source.target_column=title",
        "data.clean.min_chars=5",
    )
    with working_dir(tmp_path):
        Path(cfg.paths.raw).mkdir(parents=True)
        (Path(cfg.paths.raw) / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (Path(cfg.paths.raw) / "meta.json").write_text(json.dumps({"records": len(rows)}))
        with pytest.raises(
            UserError,
            match=re.escape(
                "pairs.csv: target title is empty in 30 of 40 rows (75%); point "
                "data.source.target_column at the column"
            ),
        ):
            prepare.run(cfg)
        assert not Path(cfg.paths.prepared).exists()


# ---------------------------------------------------------------------------------------------
# Tokenize


def run_tokenize(workdir: Path, records: list[dict], *overrides: str) -> Path:
    cfg = config(workdir, "tokenizer.vocab_size=300", *overrides)
    with working_dir(workdir):
        out = Path(cfg.paths.prepared)
        out.mkdir(parents=True)
        for split, part in (("train", records[:30]), ("val", records[30:35]), ("test", records[35:])):
            (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        counts = {"train": 30, "val": 5, "test": len(records) - 35}
        (out / "cleaning.json").write_text(json.dumps({"per_split": counts}))
        labels = sorted({r["label"] for r in records if r.get("label") is not None})
        (out / "labels.json").write_text(json.dumps(labels))
        tokenize.run(cfg)
    return workdir / cfg.paths.shards


def test_text_to_text_shards_round_trip_with_one_vocabulary(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from lmforge.data.tokenization import TokenShards

    records = [
        {"text": f"der Hund Nummer {i} läuft schnell", "target": f"dog {i} runs fast", "label": None}
        for i in range(40)
    ]
    # The task, not the records' shape, says how the shards are written.
    shards = run_tokenize(tmp_path, records, *TEXT2TEXT)
    meta = json.loads((shards / "meta.json").read_text())
    assert meta["targets"] is True and meta["labels"] == []
    tokenizer = Tokenizer.from_file(str(tmp_path / "data/tokenizer/tokenizer.json"))
    vocab = tokenizer.get_vocab()
    assert "ĠHund" in vocab and "Ġdog" in vocab, "sources and targets share the vocabulary"
    test = TokenShards(shards, "test")
    assert test.has_targets and len(test) == 5 and (test.labels == -1).all()
    for i, record in enumerate(records[35:]):
        assert tokenizer.decode(test.record(i).tolist()).strip() == record["text"]
        assert tokenizer.decode(test.target_record(i).tolist()).strip() == record["target"]
    assert meta["splits"]["test"]["target_tokens"] == len(test.target_ids)


def test_classification_shards_have_no_targets_and_encode_each_text(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from lmforge.data.tokenization import TokenShards

    records = [
        {"text": f"document {i} about {'cats' if i % 2 else 'dogs'}", "label": "ab"[i % 2]} for i in range(40)
    ]
    shards = run_tokenize(tmp_path, records)
    assert not list(shards.glob("*target*"))
    assert "targets" not in json.loads((shards / "meta.json").read_text())
    tokenizer = Tokenizer.from_file(str(tmp_path / "data/tokenizer/tokenizer.json"))
    train = TokenShards(shards, "train")
    expected = [tokenizer.encode(r["text"], add_special_tokens=False).ids for r in records[:30]]
    assert train.ids.tobytes() == np.array(sum(expected, []), dtype=train.ids.dtype).tobytes()
    assert train.offsets.tolist() == np.cumsum([0] + [len(e) for e in expected]).tolist()
    assert train.labels.tolist() == [i % 2 for i in range(30)]
    assert not train.has_targets
    with pytest.raises(ValueError, match="hold no targets"):
        train.target_record(0)


# ---------------------------------------------------------------------------------------------
# docsum


def test_split_summary_follows_pep_257() -> None:
    assert split_summary("Return x.\n\nMore about x,\nover two lines.") == (
        "Return x.",
        "More about x,\nover two lines.",
    )
    assert split_summary("Return x.") is None  # no body
    assert split_summary("Return x\nwrapped.\n\nBody.") is None  # summary not one line
    assert split_summary("Return x.\n\n   ") is None  # blank body


def test_stdlib_docsum_reads_summary_and_body(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    (root / "mod.py").write_text(
        textwrap.dedent('''\
        """Module summary.

        The module body explains things.
        """
        def f():
            """One line only."""
        def g():
            """Compute g.

            Longer text about how g works.
            """
        ''')
    )
    records = list(read_stdlib(stdlib_dir=root, target_column="summary"))
    assert records == [
        {"text": "The module body explains things.", "target": "Module summary.", "source": "mod"},
        {"text": "Longer text about how g works.", "target": "Compute g.", "source": "mod:g"},
    ]
    with pytest.raises(UserError, match="one target column, 'summary'"):
        list(read_stdlib(stdlib_dir=root, target_column="title"))


# ---------------------------------------------------------------------------------------------
# Baselines


def write_prepared(prepared: Path, splits: dict[str, list[tuple[str, str]]]) -> None:
    prepared.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (prepared / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": text, "target": target}) + "\n" for text, target in rows)
        )


def test_lead_baseline_wins_when_targets_open_their_sources(tmp_path: Path) -> None:
    train = [
        (f"Topic {w} is described here. Other words follow about {w}.", f"Topic {w} is described here.")
        for w in ("alpha", "beta", "gamma", "delta")
    ]
    test = [
        (f"Topic {w} is described here. Unrelated details come next.", f"Topic {w} is described here.")
        for w in ("omega", "sigma")
    ]
    write_prepared(tmp_path, {"train": train, "test": test})
    results = text2text_stages.text_to_text_baselines(tmp_path)
    assert results["lead"]["rougeL"] == pytest.approx(100.0)
    assert results["lead"]["exact_match"] == 1.0
    assert results["retrieval"]["rougeL"] < results["lead"]["rougeL"]


def test_retrieval_baseline_wins_when_similar_sources_share_targets(tmp_path: Path) -> None:
    train = [
        ("the cat sat on the warm mat all day. it purred.", "cats like mats"),
        ("stock prices fell sharply on monday. traders worried.", "markets fell"),
        ("the team won the final match. fans cheered.", "team wins final"),
    ]
    test = [
        ("a cat sat on the mat. it slept.", "cats like mats"),
        ("prices of stock fell on monday again. nobody knew why.", "markets fell"),
    ]
    write_prepared(tmp_path, {"train": train, "test": test})
    results = text2text_stages.text_to_text_baselines(tmp_path)
    assert results["retrieval"]["exact_match"] == 1.0
    assert results["retrieval"]["rougeL"] == pytest.approx(100.0)
    assert results["lead"]["rougeL"] < 50
    assert set(results["lead"]) >= {"sacrebleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "pairs"}
    assert results["lead"]["sacrebleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")


# ---------------------------------------------------------------------------------------------
# multi30k from the shared data


def test_multi30k_collects_and_prepares_with_val_files_as_test(shared_data_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, "data=multi30k", f"data.source.path={shared_data_dir / 'multi30k'}")
    with working_dir(tmp_path):
        collect.run(cfg)
        prepare.run(cfg)
        report = json.loads(Path("data/prepared/cleaning.json").read_text())
        test = list(read_jsonl(Path("data/prepared/test.jsonl")))
    assert report["input_rows"] == 29_000 + 1_014
    assert report["input_rows"] == report["kept"] + report["dropped_total"]
    per_split = report["per_split"]
    assert per_split["test"] == 1_014 == len(test)
    # The README counts 28,997 distinct (en, de) train pairs; the rest are duplicates.
    assert per_split["train"] + per_split["val"] == 28_997
    assert report["dropped"] == {"duplicate": 3}
    assert 0.03 < per_split["val"] / 28_997 < 0.07  # data.split.val_fraction 0.05
    assert test[0]["text"] == "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen"
    assert test[0]["target"] == "A group of men are loading cotton onto a truck"
