"""Pretraining on a corpus other than the labelled set (``corpus.*``, issue 16).

A small labelled task and an unlabelled corpus CSV are written here from a seeded generator; the
corpus's label column holds cells that would stop the reader (empty) or leak (a marker string)
if it were ever read, and planted copies of the task's val/test texts, some equal in another
case and punctuation, some inside longer texts. The stages then run in this process: the label
column is never read, every planted copy is dropped and counted, the tokenizer and pretraining
read the corpus. The IMDB check reads the real ``../shared/data/imdb/reviews.csv``.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmforge import collect, collect_corpus, prepare, prepare_corpus, pretrain, tokenize
from lmforge.core.config import Config, validate
from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from lmforge.data.corpus import HoldoutIndex, match_words

ROOT = Path(__file__).resolve().parents[1]
TASK_WORDS = {
    "sport": [
        "match",
        "goal",
        "coach",
        "season",
        "striker",
        "playoff",
        "league",
        "champion",
        "stadium",
        "referee",
    ],
    "money": [
        "shares",
        "profit",
        "merger",
        "investors",
        "earnings",
        "market",
        "bank",
        "revenue",
        "stocks",
        "dividend",
    ],
}
CORPUS_WORDS = [
    "river",
    "mountain",
    "cloud",
    "lantern",
    "meadow",
    "harbor",
    "violin",
    "pepper",
    "garden",
    "window",
]
FILLER = ["the", "a", "of", "in", "on", "after", "with", "over", "for", "as", "and"]
# Frequent in the corpus, absent from the task: a tokenizer that read the corpus learns it whole.
MARKER = "zyxqvorpus"
LEAK = "LEAKED_LABEL"


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def config(workdir: Path, *overrides: str) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return validate(
            compose(
                "config",
                overrides=[
                    "experiment=tiny",
                    f"logger.tracking_uri=sqlite:///{workdir}/mlflow.db",
                    *overrides,
                ],
            )
        )


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    picks = [rng.choice(words) for _ in range(n)] + [rng.choice(FILLER) for _ in range(n)]
    rng.shuffle(picks)
    return " ".join(picks)


def write_task(path: Path, rows: int = 400) -> None:
    rng = random.Random(0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "label"])
        for _ in range(rows):
            label = rng.choice(sorted(TASK_WORDS))
            writer.writerow([sentence(rng, TASK_WORDS[label], rng.randint(5, 9)), label])


def task_overrides(task: Path) -> list[str]:
    return [
        "data.source.kind=local",
        f"data.source.path={task}",
        "data.source.text_columns=[sentence]",
        "data.source.label_column=label",
    ]


def corpus_overrides(corpus: Path, *extra: str) -> list[str]:
    return [
        "corpus.source.kind=local",
        f"corpus.source.path={corpus}",
        "corpus.source.text_columns=[review]",
        "corpus.val_fraction=0.1",
        *extra,
    ]


def write_corpus(path: Path, equal: list[str], inside: list[str], rows: int = 600) -> None:
    """Reviews with a ``sentiment`` column that breaks (empty) or leaks (a marker) if read."""
    rng = random.Random(1)
    texts = [f"{sentence(rng, CORPUS_WORDS, rng.randint(6, 12))} {MARKER} ." for _ in range(rows)]
    # Another case and punctuation: still the same text.
    texts += [f"{text.capitalize()}!" for text in equal]
    texts += [f"I read: {text.upper()}, and then went home early." for text in inside]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for i, text in enumerate(texts):
            writer.writerow([text, "" if i % 2 else LEAK])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """The task collected and prepared, a corpus planted with its val/test texts, and the corpus
    stages, tokenize and a few pretraining steps run on it."""
    workdir = tmp_path_factory.mktemp("corpus")
    (workdir / "conf").symlink_to(ROOT / "conf")
    task, corpus = workdir / "task.csv", workdir / "reviews.csv"
    write_task(task)
    base = config(workdir, *task_overrides(task))
    with working_dir(workdir):
        collect.run(base)
        prepare.run(base)
    heldout = [r["text"] for s in ("val", "test") for r in read_jsonl(workdir / f"data/prepared/{s}.jsonl")]
    long_ones = [t for t in heldout if len(t.split()) >= 8]
    equal, inside = heldout[:5], long_ones[5:12]
    write_corpus(corpus, equal, inside)
    cfg = config(
        workdir,
        *task_overrides(task),
        *corpus_overrides(corpus),
        "pretrain.max_steps=3",
        "pretrain.val_check_interval=3",
        "pretrain.batch_size=4",
    )
    with working_dir(workdir):
        for stage in (collect_corpus, prepare_corpus, tokenize, pretrain):
            stage.run(cfg)
    return {"workdir": workdir, "heldout": heldout, "equal": equal, "inside": inside, "cfg": cfg}


def test_only_the_text_column_of_the_corpus_is_read(project) -> None:
    workdir = project["workdir"]
    raw = list(read_jsonl(workdir / "data/corpus/raw/records.jsonl"))
    # Half the sentiment cells are empty: read as labels, they would have stopped collect.
    assert len(raw) == 600 + len(project["equal"]) + len(project["inside"])
    assert all(set(record) == {"text", "source"} for record in raw)
    assert LEAK not in (workdir / "data/corpus/raw/records.jsonl").read_text()
    assert json.loads((workdir / "data/corpus/raw/meta.json").read_text())["records"] == len(raw)


def test_task_val_and_test_texts_are_dropped_and_counted(project) -> None:
    workdir = project["workdir"]
    report = json.loads((workdir / "data/corpus/prepared/cleaning.json").read_text())
    assert report["dropped"]["holdout_equal"] == len(project["equal"]) == 5
    assert report["dropped"]["holdout_contains"] == len(project["inside"]) == 7
    assert report["holdout"]["dropped"] == 12
    assert report["holdout"]["task_texts"] == len(project["heldout"])
    assert report["input_rows"] == report["kept"] + report["dropped_total"]
    kept = [
        r["text"] for s in ("train", "val") for r in read_jsonl(workdir / f"data/corpus/prepared/{s}.jsonl")
    ]
    assert len(kept) == report["kept"] == 600
    # Nothing kept equals or holds any held-out text, in any case or punctuation.
    guard = HoldoutIndex(project["heldout"], min_words=1)
    assert not [text for text in kept if guard.reason(text)]


def test_tokenizer_and_pretraining_read_the_corpus(project) -> None:
    import mlflow
    from tokenizers import Tokenizer

    from lmforge.data.datasets import PackedSequences
    from lmforge.data.tokenization import TokenShards

    workdir = project["workdir"]
    tokenizer = Tokenizer.from_file(str(workdir / "data/tokenizer/tokenizer.json"))
    assert len(tokenizer.encode(f" {MARKER}").ids) == 1  # a corpus word, never in the task
    meta = json.loads((workdir / "data/shards/meta.json").read_text())
    task_tokens = meta["splits"]["train"]["tokens"]
    corpus = meta["corpus"]
    assert corpus["source"]["kind"] == "local" and corpus["include_task_train"] is True
    # Train: the task's train text, then the 600 kept reviews less the corpus's val share.
    kept = json.loads((workdir / "data/corpus/prepared/cleaning.json").read_text())["per_split"]
    assert corpus["splits"]["train"]["records"] == meta["splits"]["train"]["records"] + kept["train"]
    assert corpus["splits"]["train"]["tokens"] > task_tokens
    shards = TokenShards(workdir / "data/shards/corpus", "train")
    assert MARKER in tokenizer.decode(shards.record(len(shards) - 1).tolist())

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lmforge-pretrain").experiment_id])
    params = run.data.params
    assert params["data.pretrain_corpus"] == f"local:{workdir / 'reviews.csv'}+task"
    packed = PackedSequences(shards, project["cfg"].pretrain.seq_len)
    assert int(params["data.train_sequences"]) == len(packed)
    assert json.loads((workdir / "metrics/pretrain.json").read_text())["steps"] == 3


def test_without_task_train_the_corpus_alone_is_pretrained_on(project, tmp_path) -> None:
    workdir, cfg = project["workdir"], project["cfg"]
    alone = config(
        workdir,
        *task_overrides(workdir / "task.csv"),
        *corpus_overrides(workdir / "reviews.csv", "corpus.include_task_train=false"),
        f"paths.tokenizer={tmp_path}/tokenizer",
        f"paths.shards={tmp_path}/shards",
    )
    with working_dir(workdir):
        tokenize.run(alone)
    meta = json.loads((tmp_path / "shards/meta.json").read_text())
    kept = json.loads((workdir / "data/corpus/prepared/cleaning.json").read_text())["per_split"]
    assert meta["corpus"]["splits"]["train"]["records"] == kept["train"]
    assert cfg.corpus.include_task_train is True


def test_missing_corpus_file_is_a_one_line_error(project, tmp_path) -> None:
    workdir = project["workdir"]
    cfg = config(
        workdir,
        *task_overrides(workdir / "task.csv"),
        *corpus_overrides(tmp_path / "nope.csv"),
        f"paths.corpus_raw={tmp_path}/raw",
    )
    with working_dir(workdir), pytest.raises(UserError) as caught:
        collect_corpus.run(cfg)
    message = str(caught.value)
    assert "nope.csv: no such corpus file" in message and "corpus.source.path" in message
    assert "\n" not in message and not (tmp_path / "raw").exists()


def test_missing_text_column_is_a_one_line_error(project, tmp_path) -> None:
    workdir = project["workdir"]
    cfg = config(
        workdir,
        *task_overrides(workdir / "task.csv"),
        *corpus_overrides(workdir / "reviews.csv"),
        "corpus.source.text_columns=[body]",
        f"paths.corpus_raw={tmp_path}/raw",
    )
    with working_dir(workdir), pytest.raises(UserError) as caught:
        collect_corpus.run(cfg)
    message = str(caught.value)
    assert "reviews.csv" in message and "no column 'body'" in message
    assert "'review'" in message and "set corpus.source.text_columns" in message and "\n" not in message


def test_tokenize_without_the_prepared_corpus_names_the_stage(project, tmp_path) -> None:
    workdir = project["workdir"]
    cfg = config(
        workdir,
        *task_overrides(workdir / "task.csv"),
        *corpus_overrides(workdir / "reviews.csv"),
        f"paths.corpus_prepared={tmp_path}/absent",
        f"paths.tokenizer={tmp_path}/tokenizer",
        f"paths.shards={tmp_path}/shards",
    )
    with working_dir(workdir), pytest.raises(UserError, match="run the collect_corpus and prepare_corpus"):
        tokenize.run(cfg)


def test_ptb_tokenized_text_matches_its_raw_form() -> None:
    sst = "it 's a charming and often affecting journey that does n't -lrb- quite -rrb- end ."
    review = "It's a <br />charming and often affecting journey that doesn't (quite) end!"
    assert match_words(sst) == match_words(review)
    guard = HoldoutIndex([sst, "a short one"], min_words=8)
    assert guard.reason(review) == "holdout_equal"
    assert guard.reason(f"Honestly, {review} I loved it.") == "holdout_contains"
    # Short held-out texts are matched whole only: "a short one" is common English.
    assert guard.reason("This is a short one, but a good one.") is None
    assert guard.reason("A short one.") == "holdout_equal"


def test_text_to_text_targets_are_held_out_inside_from_fewer_words() -> None:
    # A docsum test pair: the summary (the answer) sits in a vendored copy's docstring whose
    # body differs, so the 8-word rule for sources would let it through.
    body = "Return a list of EntryPoint objects, one per entry point of each installed package."
    summary = "Return EntryPoint objects for all installed packages."
    vendored = f"{summary} Unlike the stdlib version, this one caches the result per path."
    sources_only = HoldoutIndex([body], min_words=8)
    assert sources_only.reason(vendored) is None
    guard = HoldoutIndex([body], min_words=8, targets=[summary, "Return self."], target_min_words=3)
    assert guard.contained == 2  # the body and the summary; "Return self." is 2 words
    assert guard.reason(vendored) == "holdout_contains"
    shouted = f"return entrypoint objects -- for ALL installed packages; {body}"
    assert guard.reason(shouted) == "holdout_contains"
    # A short target is matched whole only: "Return self." is in many docstrings.
    assert guard.reason("Return self. Used by copy.") is None
    assert guard.reason("return self") == "holdout_equal"
    # Punctuation between its words does not hide a target; a missing word does.
    spread = "Return EntryPoint objects. For all installed packages, see above."
    assert guard.reason(spread) == "holdout_contains"
    assert guard.reason("Return EntryPoint objects for installed packages.") is None


def test_docstrings_source_is_deterministic_and_records_versions(tmp_path) -> None:
    from importlib import metadata

    from lmforge.data.docstrings import DocstringScan, read_docstrings

    installed = metadata.version("tqdm")
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# a lock file\ntqdm=={installed}\nno-such-package-at-all==1.0\npackaging==0.0.1\n")
    scan = DocstringScan()
    records = list(read_docstrings(lock, stats=scan, processes=2))
    assert records == list(read_docstrings(lock, processes=1))  # the same with any workers
    assert [p["name"] for p in scan.packages] == ["packaging", "tqdm"]  # lock order, by name
    assert scan.not_installed == ["no-such-package-at-all==1.0"]
    assert scan.version_mismatch == [f"packaging: pinned 0.0.1, installed {metadata.version('packaging')}"]
    assert all(set(r) == {"text", "source"} for r in records)
    assert sum(p["docstrings"] for p in scan.packages) == len(records) == scan.records > 50
    tqdm_sources = [r["source"] for r in records if r["source"].startswith("tqdm==")]
    assert f"tqdm=={installed}:tqdm.std:tqdm" in tqdm_sources
    assert not [s for s in tqdm_sources if ".tests" in s or "test_" in s]


def test_docstrings_lock_file_missing_is_a_one_line_error(tmp_path) -> None:
    from lmforge.data.docstrings import read_docstrings

    with pytest.raises(UserError, match=r"missing.lock: no such lock file; point corpus.source.path"):
        list(read_docstrings(tmp_path / "missing.lock"))


def test_sst2_pretrains_on_imdb_reviews_without_their_sentiment(shared_data_dir: Path, tmp_path) -> None:
    """experiment=sst2_imdb: SST-2 (dev as the test split, a slice of train) and 300 IMDB reviews
    through the data stages and the tokenizer."""
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    cfg = config(
        tmp_path,
        "experiment=sst2_imdb",
        f"data.source.path={shared_data_dir / 'sst2'}",
        "data.source.max_records=1200",
        f"corpus.source.path={shared_data_dir / 'imdb' / 'reviews.csv'}",
        "corpus.source.max_records=300",
        "corpus.val_fraction=0.05",
        "tokenizer.vocab_size=1000",
    )
    assert cfg.corpus.source.text_columns == ["review"]
    with working_dir(tmp_path):
        for stage in (collect, prepare, collect_corpus, prepare_corpus, tokenize):
            stage.run(cfg)
    records = list(read_jsonl(tmp_path / "data/corpus/raw/records.jsonl"))
    assert len(records) == 300 and all(set(r) == {"text", "source"} for r in records)
    assert records[0]["source"].endswith("reviews.csv:2")
    kept = list(read_jsonl(tmp_path / "data/corpus/prepared/train.jsonl"))
    # Lower-cased, <br /> gone, punctuation spaced as in SST-2 ("it 's", "does n't").
    assert all(r["text"] == r["text"].lower() and "<br" not in r["text"] for r in kept)
    assert any(" n't " in r["text"] or " 's " in r["text"] for r in kept)
    report = json.loads((tmp_path / "data/corpus/prepared/cleaning.json").read_text())
    dev = sum(1 for _ in read_jsonl(tmp_path / "data/prepared/test.jsonl"))
    assert report["holdout"]["task_texts"] >= dev >= 800
    assert report["input_rows"] == report["kept"] + report["dropped_total"] == 300
    meta = json.loads((tmp_path / "data/shards/meta.json").read_text())
    assert meta["corpus"]["splits"]["train"]["tokens"] > 50_000
