"""What keeps collect/prepare/tokenize and the pretraining loader flat in memory on corpora larger
than memory (issue 17): the compact deduplication table, offsets and labels streamed to disk,
the tokenizer's training sample, packed windows read from the memory map; and the scaling
benchmark's input builder (bench/scaling.py)."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from lmforge.core.config import CleanConfig, Config, PathsConfig, SplitConfig, TokenizerConfig
from lmforge.core.errors import UserError
from lmforge.core.task_registry import get_task
from lmforge.data.cleaning import CleaningReport, DigestTable, clean_and_split, text_key
from lmforge.data.datasets import Chained, PackedSequences, SepJoined
from lmforge.data.tokenization import (
    Int64Writer,
    TokenShards,
    encode_to_shards,
    ids_dtype,
    in_sample,
    special_ids,
    train_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"review {i}: the film was {'good' if i % 2 else 'bad'} and {i * 7} minutes long" for i in range(60)]


def test_digest_table_matches_a_dict_through_growth() -> None:
    rng = random.Random(0)
    table, reference = DigestTable(capacity=8), {}
    keys = [rng.getrandbits(64) | 1 for _ in range(5000)]
    for key in keys + keys[:100]:  # the repeats must find the first value
        assert table.setdefault(key, key % 7) == reference.get(key)
        reference.setdefault(key, key % 7)
    assert len(table) == len(reference) == 5000
    assert table.capacity >= 1.5 * len(table)  # never more than two-thirds full
    assert all(table.get(k) == v for k, v in reference.items())
    assert table.get(2) is None
    with pytest.raises(ValueError):
        table.setdefault(0, 1)


def test_text_key_is_nonzero_and_stable() -> None:
    assert text_key("a") == text_key("a") != text_key("b")
    assert all(text_key(t) for t in TEXTS)


def test_dedup_keeps_first_and_counts_label_conflicts() -> None:
    records = [
        {"text": "the same text, long enough", "label": "pos"},
        {"text": "the same   text, long enough", "label": "pos"},  # equal once normalised
        {"text": "the same text, long enough", "label": "neg"},
        {"text": "another text, long enough", "label": None},
        {"text": "another text, long enough", "label": None},
        {"text": "a pair source, long enough", "target": "t1"},
        {"text": "a pair source, long enough", "target": "t1"},
        {"text": "a pair source, long enough", "target": "t2"},  # another target: kept
    ]
    report = CleaningReport()
    kept = [r for _, r in clean_and_split(records, CleanConfig(), SplitConfig(), report)]
    assert [(r["text"], r.get("label"), r.get("target")) for r in kept] == [
        ("the same text, long enough", "pos", None),
        ("another text, long enough", None, None),
        ("a pair source, long enough", None, "t1"),
        ("a pair source, long enough", None, "t2"),
    ]
    assert report.dropped == {"duplicate": 3, "duplicate_label_conflict": 1}


def test_int64_writer_equals_np_save_across_chunks(tmp_path) -> None:
    values = np.random.default_rng(0).integers(-(2**62), 2**62, size=1000)
    for count in (0, 1, 7, 1000):
        writer = Int64Writer(tmp_path / f"v{count}.npy", chunk=16)
        writer.extend(values[: count // 2].tolist())
        for v in values[count // 2 : count]:
            writer.append(int(v))
        writer.close()
        assert writer.count == count
        assert np.array_equal(np.load(tmp_path / f"v{count}.npy"), values[:count])
        assert not (tmp_path / f"v{count}.npy.part").exists()


def test_encode_to_shards_streams_offsets_and_labels(tmp_path) -> None:
    tokenizer = train_tokenizer(TEXTS, TokenizerConfig(vocab_size=300, min_frequency=1))
    pairs = [(t, i % 3 - 1) for i, t in enumerate(TEXTS)]
    stats = encode_to_shards(tokenizer, iter(pairs), tmp_path, "train", batch_size=7)
    expected = [tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert stats == {
        "records": len(TEXTS),
        "tokens": sum(map(len, expected)),
        "labelled": sum(1 for _, label in pairs if label >= 0),
    }
    vocab = tokenizer.get_vocab_size()
    (tmp_path / "meta.json").write_text(
        json.dumps({"dtype": ids_dtype(vocab).name, "special_ids": special_ids()})
    )
    shards = TokenShards(tmp_path, "train")
    assert [shards.record(i).tolist() for i in range(len(shards))] == expected
    assert shards.labels.tolist() == [label for _, label in pairs]


def test_in_sample_is_a_stable_hash_sample() -> None:
    texts = [f"text {i}" for i in range(20000)]
    assert all(in_sample(t, 1.0) for t in texts[:100])
    picked = [t for t in texts if in_sample(t, 0.1)]
    assert 1800 < len(picked) < 2200
    assert picked == [t for t in reversed(texts) if in_sample(t, 0.1)][::-1]  # order-free


def test_max_train_texts_is_checked() -> None:
    with pytest.raises(UserError, match="tokenizer.max_train_texts"):
        TokenizerConfig(max_train_texts=0)


def test_tokenizer_trains_on_the_configured_sample(tmp_path, monkeypatch) -> None:
    from lmforge import tokenize
    from lmforge.data import tokenization

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    with open(prepared / "train.jsonl", "w") as handle:
        for text in TEXTS:
            handle.write(json.dumps({"text": text, "label": 0}) + "\n")
    seen: list[list[str]] = []

    def recording(texts, cfg, length=None):
        seen.append(list(texts))
        return "tokenizer"

    monkeypatch.setattr(tokenization, "train_tokenizer", recording)
    for limit in (None, 10**6, 20):
        cfg = Config(
            tokenizer=TokenizerConfig(max_train_texts=limit), paths=PathsConfig(prepared=str(prepared))
        )
        tokenize.trained_tokenizer(cfg, prepared, {"train": len(TEXTS)}, get_task(cfg.task.name))
    assert seen[0] == seen[1] == TEXTS
    assert seen[2] == [t for t in TEXTS if in_sample(t, 20 / len(TEXTS))]
    assert 5 < len(seen[2]) < 40


class FakeShards:
    def __init__(self, lengths: list[int], target_lengths: list[int] | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.ids = rng.integers(10, 300, size=int(self.offsets[-1])).astype(np.uint16)
        self.has_targets = target_lengths is not None
        if self.has_targets:
            self.target_offsets = np.concatenate(([0], np.cumsum(target_lengths))).astype(np.int64)
            self.target_ids = rng.integers(10, 300, size=int(self.target_offsets[-1])).astype(np.uint16)
        self.meta = {"special_ids": special_ids()}
        self.path = Path("fake")


def built_stream(shards: FakeShards, sep: int) -> np.ndarray:
    """The stream as PackedSequences built it in memory before it read windows lazily."""
    stream = np.insert(np.asarray(shards.ids), shards.offsets[1:], sep).astype(np.int64)
    if shards.has_targets:
        targets = np.insert(np.asarray(shards.target_ids), shards.target_offsets[1:], sep)
        stream = np.concatenate((stream, targets.astype(np.int64)))
    return stream


@pytest.mark.parametrize(
    "lengths, targets",
    [([5, 0, 3, 12, 1, 0, 0, 9], None), ([0, 0, 4], None), ([3, 8, 2, 7], [4, 0, 6, 1])],
)
def test_packed_windows_equal_the_stream_built_in_memory(lengths, targets) -> None:
    shards = FakeShards(lengths, targets)
    sep, cls = special_ids()["sep"], special_ids()["cls"]
    reference = built_stream(shards, sep)
    for seq_len in (2, 3, 5, 8):
        packed = PackedSequences(shards, seq_len)  # type: ignore[arg-type]
        assert len(packed.stream) == len(reference)
        assert len(packed) == len(reference) // (seq_len - 1)
        for i in range(len(packed)):
            window = reference[i * (seq_len - 1) : (i + 1) * (seq_len - 1)]
            assert packed[i].tolist() == [cls, *window.tolist()]
        assert np.array_equal(np.asarray(packed.stream), reference)
    # Any slice, and a mask (bench/recipe_search.py keeps some records' spans), as an array.
    stream = PackedSequences(shards, 4).stream
    for a in range(len(reference) + 1):
        for b in range(a, len(reference) + 2, 3):
            assert np.array_equal(stream[a:b], reference[a:b])
    mask = np.arange(len(reference)) % 3 == 0
    assert np.array_equal(stream[mask], reference[mask])


def test_sep_joined_and_chained_lengths() -> None:
    part = SepJoined(np.arange(5), np.array([0, 2, 5]), 3)
    assert len(part) == 7 and part.take(0, 7).tolist() == [0, 1, 3, 2, 3, 4, 3]
    chained = Chained(part, SepJoined(np.array([9]), np.array([0, 1]), 3))
    assert len(chained) == 9 and chained[5:9].tolist() == [4, 3, 9, 3]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "bench" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("scale, rows", [(1, 4), (2.5, 10), (0.5, 2)])
def test_benchmark_input_copies_are_distinct(tmp_path, scale, rows) -> None:
    bench = load_bench()
    header = ["review", "sentiment"]
    base = [[f"review number {i}, with a comma", "positive"] for i in range(4)]
    assert bench.write_scaled(header, base, scale, tmp_path / "out.csv") == rows
    with open(tmp_path / "out.csv", newline="") as handle:
        got = list(csv.reader(handle))
    assert got[0] == header and len(got) == rows + 1
    texts = [row[0] for row in got[1:]]
    assert len(set(texts)) == rows and texts[:2] == [base[0][0], base[1][0]]


def test_benchmark_skips_without_the_corpus(tmp_path, capsys, monkeypatch) -> None:
    bench = load_bench()
    monkeypatch.setattr("sys.argv", ["scaling.py", "--imdb", str(tmp_path / "absent.csv")])
    bench.main()
    assert "skipped" in capsys.readouterr().err
