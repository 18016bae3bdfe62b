"""Token tagging end to end on tiny synthetic treebanks, every stage in this process: CoNLL-U
part-of-speech data (collect -> prepare -> tokenize -> pretrain -> finetune -> evaluate ->
baselines), a CoNLL-2003-style NER file scored by config only with entity spans, the MLflow
runs and registered model, ``eval.file``, the pyfunc model (and ``mlflow models serve``)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from lmforge.io import read_jsonl
from test_pipeline import tiny_config, working_dir

# A toy grammar: every sentence is DET (ADJ) NOUN VERB (ADP DET NOUN) PUNCT.
LEXICON = {"DET": ["the", "a", "this", "every"], "ADJ": ["big", "small", "red", "happy", "old"],
           "NOUN": ["dog", "cat", "man", "house", "tree", "garden", "river"],
           "VERB": ["runs", "sleeps", "sits", "jumps", "waits"], "ADP": ["in", "near", "under"],
           "PUNCT": [".", "!"]}
MODEL = "lmforge-test-tagger"


def pos_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pattern = ["DET"] + (["ADJ"] if rng.random() < 0.5 else []) + ["NOUN", "VERB"]
        if rng.random() < 0.6:
            pattern += ["ADP", "DET", "NOUN"]
        pattern.append("PUNCT")
        words = [(rng.choice(LEXICON[tag]), tag) for tag in pattern]
        words[0] = (words[0][0].capitalize(), words[0][1])
        out.append(words)
    return out


def write_conllu(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    lines = []
    for number, sentence in enumerate(sentences):
        lines += [f"# sent_id = s{number}", "# text = " + " ".join(w for w, _ in sentence)]
        lines += [f"{i}\t{w}\t{w.lower()}\t{t}\t{t[:2]}\t_\t0\tdep\t_\t_"
                  for i, (w, t) in enumerate(sentence, start=1)]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def overrides(corpus: Path) -> list[str]:
    return ["task=tagging", "data.source.kind=local", f"data.source.path={corpus}",
            "+data.source.splits.train.file=train.conllu",
            "+data.source.splits.test.file=test.conllu", "data.clean.min_chars=1",
            "task.word_feature_buckets=256", "finetune.max_epochs=3", "finetune.max_len=16",
            "model.max_len=64", f"logger.registered_model={MODEL}"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from lmforge import baselines, collect, evaluate, finetune, prepare, pretrain, tokenize

    workdir = tmp_path_factory.mktemp("tagging")
    corpus = workdir / "corpus"
    corpus.mkdir()
    train = pos_sentences(400, 0)
    # One very long sentence: 20 words do not fit finetune.max_len=16 with [CLS] and [SEP].
    train.append([(w, t) for s in pos_sentences(3, 9) for w, t in s])
    write_conllu(corpus / "train.conllu", train)
    test = pos_sentences(40, 1)
    test.append([(w, t) for s in pos_sentences(3, 8) for w, t in s])
    write_conllu(corpus / "test.conllu", test)
    (workdir / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    cfg = tiny_config(workdir, *overrides(corpus))
    with working_dir(workdir):
        for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate, baselines):
            stage.run(cfg)
    return workdir, cfg


def test_sentences_flow_through_the_data_stages(pipeline) -> None:
    workdir, _ = pipeline
    raw = list(read_jsonl(workdir / "data/raw/records.jsonl"))
    assert len(raw) == 442 and all(len(r["words"]) == len(r["tags"]) for r in raw)
    assert json.loads((workdir / "data/prepared/tags.json").read_text()) == sorted(LEXICON)
    meta = json.loads((workdir / "data/shards/meta.json").read_text())
    assert meta["tagging"]["tags"] == sorted(LEXICON) and meta["labels"] == []
    prepared = list(read_jsonl(workdir / "data/prepared/test.jsonl"))
    assert meta["splits"]["test"]["words"] == sum(len(r["words"]) for r in prepared)


def test_finetune_and_evaluate_score_every_word(pipeline) -> None:
    workdir, _ = pipeline
    config = json.loads((workdir / "models/finetuned/config.json").read_text())
    assert config["task"] == "tagging" and config["tags"] == sorted(LEXICON)
    report = json.loads((workdir / "metrics/eval.json").read_text())
    prepared = list(read_jsonl(workdir / "data/prepared/test.jsonl"))
    assert report["words"] == sum(len(r["words"]) for r in prepared)
    # The 20-word test sentence does not fit 16 subwords: tagged in windows, none of it dropped.
    assert report["split_sentences"] == 1
    with open(workdir / "plots/eval/confusion.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == report["words"]
    right = sum(r["actual"] == r["predicted"] for r in rows)
    assert report["accuracy"] == pytest.approx(right / len(rows))
    assert sum(v["support"] for v in report["per_tag"].values()) == report["words"]
    assert "entities" not in report  # UPOS-like tags are no BIO scheme
    assert (workdir / "plots/eval/confusion.png").stat().st_size > 0
    baselines = json.loads((workdir / "metrics/baselines.json").read_text())
    assert baselines["most_frequent_tag"]["words"] == report["words"]
