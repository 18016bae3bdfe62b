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

from lmforge.core.io import read_jsonl
from test_pipeline import tiny_config, working_dir

# A toy grammar: every sentence is DET (ADJ) NOUN VERB (ADP DET NOUN) PUNCT.
LEXICON = {
    "DET": ["the", "a", "this", "every"],
    "ADJ": ["big", "small", "red", "happy", "old"],
    "NOUN": ["dog", "cat", "man", "house", "tree", "garden", "river"],
    "VERB": ["runs", "sleeps", "sits", "jumps", "waits"],
    "ADP": ["in", "near", "under"],
    "PUNCT": [".", "!"],
}
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
        lines += [
            f"{i}\t{w}\t{w.lower()}\t{t}\t{t[:2]}\t_\t0\tdep\t_\t_"
            for i, (w, t) in enumerate(sentence, start=1)
        ]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def overrides(corpus: Path) -> list[str]:
    return [
        "task=tagging",
        "data.source.kind=local",
        f"data.source.path={corpus}",
        "+data.source.splits.train.file=train.conllu",
        "+data.source.splits.test.file=test.conllu",
        "data.clean.min_chars=1",
        "task.word_feature_buckets=256",
        # The BiLSTM context (over words), the character CNN and word dropout ride along, so
        # saving, eval.file, the registered pyfunc model and `mlflow models serve` are exercised
        # with them.
        "task.context_lstm=8",
        "task.context_over=words",
        "task.char_cnn=8",
        "task.word_dropout=0.1",
        # Word vectors from the train text (no corpus here): the word_vectors stage feeds the
        # tagger, whose saved folder then carries them.
        "vectors.enabled=true",
        "vectors.dim=8",
        "vectors.min_count=1",
        "vectors.contexts=20",
        "finetune.max_epochs=3",
        "finetune.max_len=16",
        "model.max_len=64",
        f"logger.registered_model={MODEL}",
    ]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from lmforge import baselines, collect, evaluate, finetune, prepare, pretrain, tokenize, word_vectors

    workdir = tmp_path_factory.mktemp("tagging")
    corpus = workdir / "corpus"
    corpus.mkdir()
    train = pos_sentences(400, 0)
    # One very long sentence: 20 words do not fit finetune.max_len=16 with [CLS] and [SEP].
    train.append([(w, t) for s in pos_sentences(3, 9) for w, t in s])
    write_conllu(corpus / "train.conllu", train)
    test = pos_sentences(40, 1)
    test.append([(w, t) for s in pos_sentences(3, 8) for w, t in s])
    # A tag absent from train: no model can predict it; scored wrong and counted.
    test[0] = [*test[0][:-1], ("twice", "NUM"), test[0][-1]]
    write_conllu(corpus / "test.conllu", test)
    (workdir / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    cfg = tiny_config(workdir, *overrides(corpus))
    with working_dir(workdir):
        for stage in (collect, prepare, tokenize, word_vectors, pretrain, finetune, evaluate, baselines):
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
    # The word vectors (the toy grammar's 26 lower-cased words, 8 wide) travel in the folder.
    vectors = json.loads((workdir / "models/word_vectors/meta.json").read_text())
    assert config["word_vectors"] == [vectors["words"], 8] and vectors["words"] == 26
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
    assert report["unseen_tag_words"] == 1 and report["per_tag"]["NUM"]["recall"] == 0.0
    assert not any(r["predicted"] == "NUM" for r in rows)
    cleaning = json.loads((workdir / "data/prepared/cleaning.json").read_text())
    assert cleaning["unseen_tags"] == {"val": {}, "test": {"NUM": 1}}
    assert (workdir / "plots/eval/confusion.png").stat().st_size > 0
    baselines = json.loads((workdir / "metrics/baselines.json").read_text())
    assert baselines["most_frequent_tag"]["words"] == report["words"]


def test_runs_hold_the_tag_f1_bars_and_the_wrongly_tagged_sentences(pipeline, tmp_path) -> None:
    """Issue 33: finetune logs the validation F1 per tag as a chart, evaluate the test F1 bars
    (PNG, and the CSV dvc.yaml plots) and the sentences with a word tagged wrong as a table,
    each wrong word with its gold and its predicted tag."""
    import mlflow

    from test_pipeline import logged_table

    workdir, _ = pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    runs = {
        stage: client.search_runs([client.get_experiment_by_name(f"lmforge-{stage}").experiment_id])[0]
        for stage in ("finetune", "evaluate")
    }
    assert "val_f1.png" in {a.path for a in client.list_artifacts(runs["finetune"].info.run_id)}
    assert client.get_metric_history(runs["finetune"].info.run_id, "train/lr")
    evaluate_id = runs["evaluate"].info.run_id
    assert {"f1.png", "f1.csv", "errors.csv", "test_errors.json"} <= {
        a.path for a in client.list_artifacts(evaluate_id)
    }
    report = json.loads((workdir / "metrics/eval.json").read_text())
    with open(workdir / "plots/eval/f1.csv", newline="") as handle:
        bars = {r["label"]: float(r["f1"]) for r in csv.DictReader(handle)}
    assert bars == pytest.approx({k: v["f1"] for k, v in report["per_tag"].items()}, abs=1e-6)
    rows = logged_table(client, evaluate_id, "test_errors.json", tmp_path)
    assert sum(r["errors"] for r in rows) == round((1 - report["accuracy"]) * report["words"])
    for row in rows:
        gold, predicted = row["gold"].split(), row["predicted"].split()
        assert len(gold) == len(predicted) == row["errors"] > 0
        for g, p in zip(gold, predicted, strict=True):
            word, tag = g.rsplit("/", 1)
            assert p.rsplit("/", 1) != [word, tag] and p.startswith(f"{word}/") and word in row["text"]
    # The unseen tag (NUM, on "twice") is always wrong.
    assert any("/NUM" in r["gold"] for r in rows)
    assert not any("/NUM" in r["predicted"] for r in rows)


def test_eval_file_scores_any_tagged_file_and_counts_unseen_tags(pipeline, tmp_path, capsys) -> None:
    from lmforge import evaluate

    workdir, cfg = pipeline
    sentences = pos_sentences(10, 3)
    # A tag the model never saw: every word carrying it is scored wrong, and counted.
    sentences[4] = [*sentences[4][:-1], ("two", "NUM"), ("three", "NUM"), sentences[4][-1]]
    write_conllu(tmp_path / "extra.conllu", sentences)
    output = tmp_path / "extra.json"
    with working_dir(workdir):
        evaluate.run(
            cfg.__class__(
                **{
                    **cfg.__dict__,
                    "eval": cfg.eval.__class__(file=str(tmp_path / "extra.conllu"), output=str(output)),
                }
            )
        )
    report = json.loads(output.read_text())
    assert report["words"] == sum(len(s) for s in sentences)
    assert report["unseen_tag_words"] == 2 and report["unseen_tags"] == {"NUM": 2}
    assert report["per_tag"]["NUM"]["recall"] == 0.0
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'extra.conllu'}:" in printed and "'NUM' is not one the model knows" in printed
    # The same sentences as JSONL word lists, read by config alone.
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"tokens": [w for w, _ in s], "pos": [t for _, t in s]}) + "\n" for s in sentences)
    )
    from lmforge.core.config import validate

    with working_dir(workdir):
        from omegaconf import OmegaConf

        raw = OmegaConf.structured(cfg)
        raw.eval.file, raw.eval.output = str(jsonl), str(tmp_path / "extra_jsonl.json")
        raw.data.source.words_column, raw.data.source.tags_column = "tokens", "pos"
        evaluate.run(validate(raw))
    again = json.loads((tmp_path / "extra_jsonl.json").read_text())
    assert {k: again[k] for k in ("accuracy", "f1", "words", "unseen_tag_words")} == {
        k: report[k] for k in ("accuracy", "f1", "words", "unseen_tag_words")
    }


def test_registered_tagger_tags_raw_sentences_and_word_lists(pipeline) -> None:
    import mlflow

    workdir, _ = pipeline
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    raw = model.predict(["The big dog runs near a tree .", "  A cat   sleeps !"])
    split = model.predict(
        [["The", "big", "dog", "runs", "near", "a", "tree", "."], ["A", "cat", "sleeps", "!"]]
    )
    assert raw["words"].tolist()[1] == ["A", "cat", "sleeps", "!"]
    assert [len(t) for t in raw["tags"]] == [8, 4]
    assert raw["tags"].tolist() == split["tags"].tolist()
    assert all(t in LEXICON for row in raw["tags"] for t in row)


@pytest.mark.slow
@pytest.mark.ci
def test_served_tagger_answers_like_the_loaded_one(pipeline, tmp_path) -> None:
    import mlflow

    from conftest import post_json, served_model

    workdir, _ = pipeline
    uri = f"sqlite:///{workdir}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    texts = ["The big dog runs near a tree .", "A cat sleeps !"]
    model_uri = f"models:/{MODEL}/1"
    expected = mlflow.pyfunc.load_model(model_uri).predict(texts)["tags"].tolist()
    with served_model(model_uri, uri, workdir, tmp_path / "serve.log") as base:
        for payload in (
            {"inputs": texts},
            {"dataframe_records": [{"text": t} for t in texts]},
            {"dataframe_records": [{"words": t.split()} for t in texts]},
        ):
            rows = post_json(f"{base}/invocations", payload)["predictions"]
            assert [r["tags"] for r in rows] == expected
            assert [r["words"] for r in rows] == [t.split() for t in texts]


# CoNLL-2003-style named entities: people, places and organisations in BIO tags.
PEOPLE = [["Anna", "Smith"], ["Peter"], ["Maria", "de", "Souza"], ["Li", "Wei"], ["Omar"]]
PLACES = [["Paris"], ["New", "York"], ["Lagos"], ["Kyoto"], ["Buenos", "Aires"]]
ORGS = [["Acme", "Corp"], ["the", "United", "Nations"], ["Globex"], ["Red", "Cross"]]


def ner_sentences(n: int, seed: int) -> tuple[list[list[tuple[str, str]]], int]:
    """Sentences and how many entity spans they hold (counted as they are written)."""
    rng = random.Random(seed)
    out, spans = [], 0

    def entity(words: list[str], kind: str) -> list[tuple[str, str]]:
        return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]

    for _ in range(n):
        sentence = entity(rng.choice(PEOPLE), "PER") + [("visited", "O")]
        sentence += entity(rng.choice(PLACES), "LOC")
        spans += 2
        if rng.random() < 0.5:
            sentence += [("with", "O")] + entity(rng.choice(ORGS), "ORG")
            spans += 1
        sentence.append((".", "O"))
        out.append(sentence)
    return out, spans


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in sentences:
        lines += [f"{w} NNP I-NP {t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def test_conll_ner_file_runs_end_to_end_by_config_with_entity_scores(tmp_path) -> None:
    from lmforge import collect, evaluate, finetune, prepare, pretrain, tokenize
    from lmforge.tasks.tagging.spans import span_scores

    corpus = tmp_path / "ner"
    corpus.mkdir()
    write_conll(corpus / "train.txt", ner_sentences(300, 0)[0])
    test, spans = ner_sentences(30, 1)
    write_conll(corpus / "test.txt", test)
    (tmp_path / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    cfg = tiny_config(
        tmp_path,
        "task=tagging",
        "data.source.kind=local",
        f"data.source.path={corpus}",
        "data.source.format=conll",
        "+data.source.splits.train.file=train.txt",
        "+data.source.splits.test.file=test.txt",
        "pretrain.enabled=false",
        "task.word_feature_buckets=256",
        "finetune.max_epochs=3",
        "logger.registered_model=null",
    )
    with working_dir(tmp_path):
        for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate):
            stage.run(cfg)
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    entities = report["entities"]
    assert entities["support"] == spans
    assert set(entities["per_type"]) <= {"PER", "LOC", "ORG"}
    # The span figures follow from the word predictions in plots/eval/confusion.csv.
    with open(tmp_path / "plots/eval/confusion.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    gold, predicted, start = [], [], 0
    for sentence in test:
        gold.append([r["actual"] for r in rows[start : start + len(sentence)]])
        predicted.append([r["predicted"] for r in rows[start : start + len(sentence)]])
        start += len(sentence)
    assert gold == [[t for _, t in s] for s in test]
    assert span_scores(gold, predicted)["f1"] == pytest.approx(entities["f1"])
