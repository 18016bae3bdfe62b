"""Text-to-text end to end on a tiny synthetic parallel corpus, every stage in this process:
collect (parallel files) -> prepare -> tokenize -> pretrain (causal LM) -> finetune (prefix LM)
-> evaluate (SacreBLEU, chrF, ROUGE, exact match, perplexity) -> generate, with the MLflow runs,
the registered model, ``eval.file`` on another language pair given by config only, and the
decoding options of ``python -m lmforge.generate``."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from test_pipeline import tiny_config, working_dir

# A toy language pair: each German word has one English word; sentences are word-for-word.
LEXICON = {
    "ein": "a",
    "mann": "man",
    "hund": "dog",
    "frau": "woman",
    "kind": "child",
    "läuft": "runs",
    "springt": "jumps",
    "sitzt": "sits",
    "auf": "on",
    "der": "the",
    "straße": "street",
    "wiese": "meadow",
    "im": "in the",
    "park": "park",
    "rot": "red",
    "blau": "blue",
    "großer": "big",
    "kleiner": "small",
    "schnell": "fast",
    "und": "and",
}
FRENCH = {
    "ein": "un",
    "mann": "homme",
    "hund": "chien",
    "läuft": "court",
    "auf": "sur",
    "der": "la",
    "straße": "rue",
}
MODEL = "lmforge-test-text2text"


def sentences(n: int, seed: int, words: dict[str, str]) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    vocab = sorted(words)
    pairs = []
    for _ in range(n):
        source = [rng.choice(vocab) for _ in range(rng.randint(3, 9))]
        pairs.append(
            (" ".join(source).capitalize() + ".", " ".join(words[w] for w in source).capitalize() + ".")
        )
    return pairs


def write_pair(stem: Path, suffixes: tuple[str, str], pairs: list[tuple[str, str]]) -> None:
    for side, suffix in enumerate(suffixes):
        Path(f"{stem}.{suffix}").write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")


def overrides(corpus: Path) -> list[str]:
    return [
        "task=text2text",
        "pretrain=clm",
        "data.source.kind=local",
        f"data.source.path={corpus}",
        "data.source.parallel=[de,en]",
        "+data.source.splits.train.file=train",
        "+data.source.splits.test.file=val",
        "data.clean.min_chars=1",
        "task.max_source_len=24",
        "task.max_target_len=24",
        "generate.max_new_tokens=24",
        "finetune.max_epochs=2",
        f"logger.registered_model={MODEL}",
    ]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from lmforge import collect, evaluate, finetune, prepare, pretrain, report, tokenize

    workdir = tmp_path_factory.mktemp("text2text")
    corpus = workdir / "corpus"
    corpus.mkdir()
    write_pair(corpus / "train", ("de", "en"), sentences(600, 0, LEXICON))
    write_pair(corpus / "val", ("de", "en"), sentences(40, 1, LEXICON))
    write_pair(
        corpus / "test",
        ("fr", "en"),
        [
            (f, e)
            for f, e in zip(
                *(  # the same sentences in French and English
                    [p[i] for p in sentences(20, 2, FRENCH)] for i in (0, 1)
                ),
                strict=True,
            )
        ],
    )
    (workdir / "conf").symlink_to(Path(__file__).resolve().parents[1] / "conf")
    cfg = tiny_config(workdir, *overrides(corpus))
    with working_dir(workdir):
        for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate, report):
            stage.run(cfg)
    return workdir, cfg


def test_pairs_flow_through_the_data_stages(pipeline) -> None:
    workdir, _ = pipeline
    test = list(read_jsonl(workdir / "data/prepared/test.jsonl"))
    assert len(test) == 40 and all(r["text"] and r["target"] for r in test)
    meta = json.loads((workdir / "data/shards/meta.json").read_text())
    assert meta["targets"] is True and meta["labels"] == []
    assert (workdir / "models/pretrained/lm.pt").is_file()


def test_evaluate_scores_generated_text(pipeline) -> None:
    workdir, _ = pipeline
    result = json.loads((workdir / "metrics/eval.json").read_text())
    for key in ("sacrebleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert 0.0 <= result[key] <= 100.0
    # Figures you can cite: sacrebleu's own signature format (tests/test_metric_parity.py).
    assert result["sacrebleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert result["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    assert 0.0 <= result["exact_match"] <= 1.0
    assert result["target_perplexity"] > 1.0 and result["mean_generated_tokens"] > 0
    assert result["examples"] == 40
    with open(workdir / "plots/eval/samples.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and set(rows[0]) == {"source", "reference", "prediction"}
    finetune = json.loads((workdir / "metrics/finetune.json").read_text())
    assert finetune["best_val_loss"] > 0
    assert "BLEU" in (workdir / "reports/summary.txt").read_text()


def test_mlflow_holds_the_text2text_runs_and_the_registered_model(pipeline) -> None:
    import mlflow

    workdir, _ = pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    runs = {}
    for stage in ("finetune", "evaluate"):
        experiment = client.get_experiment_by_name(f"lmforge-{stage}")
        (runs[stage],) = client.search_runs([experiment.experiment_id])
    finetune, evaluate = runs["finetune"], runs["evaluate"]
    assert finetune.data.tags["lmforge.task"] == "text2text"
    assert finetune.data.tags["lmforge.objective"] == "best_val_loss"
    assert finetune.data.tags["lmforge.pretrain_checkpoint"].endswith("lm.pt")
    assert {"val/loss", "val/perplexity", "best_val_loss"} <= set(finetune.data.metrics)
    assert {"test_sacrebleu", "test_chrf", "test_rougeL", "test_rougeLsum", "test_target_perplexity"} <= set(
        evaluate.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert {"eval.json", "samples.csv", "test_samples.json"} <= artifacts
    table = json.loads(Path(client.download_artifacts(evaluate.info.run_id, "test_samples.json")).read_text())
    assert table["columns"] == ["source", "reference", "prediction"] and len(table["data"]) == 40
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    assert version.run_id == finetune.info.run_id
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version.version}")
    out = model.predict(["Ein hund läuft auf der straße."])
    assert list(out.columns) == ["generated"] and isinstance(out["generated"][0], str)


def test_eval_file_scores_another_language_pair_by_config(pipeline, tmp_path) -> None:
    from lmforge import evaluate

    workdir, _ = pipeline
    output = tmp_path / "fr-en.json"
    cfg = tiny_config(
        workdir,
        *overrides(workdir / "corpus"),
        "data.source.parallel=[fr,en]",
        f"eval.file={workdir / 'corpus' / 'test'}",
        f"eval.output={output}",
    )
    with working_dir(workdir):
        evaluate.run(cfg)
    result = json.loads(output.read_text())
    assert result["examples"] == 20 and result["file"].endswith("test")
    assert 0.0 <= result["sacrebleu"] <= 100.0


def test_generate_writes_one_output_per_input(pipeline, tmp_path, capsys) -> None:
    from lmforge import generate

    workdir, _ = pipeline
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("Ein mann läuft.\nEin kind sitzt im park.\n" + "hund " * 200 + "\n")
    output = tmp_path / "out.jsonl"
    for strategy in ("greedy", "beam", "sample"):
        cfg = tiny_config(
            workdir,
            *overrides(workdir / "corpus"),
            f"generate.input={inputs}",
            f"generate.output={output}",
            f"generate.strategy={strategy}",
        )
        with working_dir(workdir):
            generate.run(cfg)
        rows = list(read_jsonl(output))
        assert [r["input"] for r in rows] == inputs.read_text().splitlines()
        assert all(isinstance(r["output"], str) and r["tokens"] <= 24 for r in rows)
    # The 200-word source is longer than task.max_source_len: cut to its first tokens, and said.
    assert "1 input(s) longer than the context" in capsys.readouterr().out


def test_generate_continues_a_prompt_with_the_pretrained_lm(pipeline, capsys) -> None:
    from lmforge import generate

    workdir, _ = pipeline
    long_prompt = "ein mann " * 100  # longer than the 64-token context: keeps its last tokens
    for prompt in ("Ein hund", long_prompt):
        cfg = tiny_config(
            workdir,
            *overrides(workdir / "corpus"),
            f"generate.prompt='{prompt}'",
            f"generate.model={workdir / 'models/pretrained'}",
            "generate.max_new_tokens=8",
        )
        with working_dir(workdir):
            generate.run(cfg)
    out = capsys.readouterr().out
    assert "1 input(s) longer than the context, cut to their last tokens" in out


def test_generate_says_what_is_missing(pipeline, tmp_path) -> None:
    from lmforge import generate

    workdir, _ = pipeline
    cfg = tiny_config(workdir, *overrides(workdir / "corpus"))
    with working_dir(workdir), pytest.raises(UserError, match="generate.prompt=TEXT"):
        generate.run(cfg)
    cfg = tiny_config(
        workdir, *overrides(workdir / "corpus"), "generate.prompt=x", f"generate.model={tmp_path}"
    )
    with working_dir(workdir), pytest.raises(UserError, match="config.json is missing"):
        generate.run(cfg)


@pytest.mark.slow
@pytest.mark.ci
def test_served_text2text_model_answers_like_the_loaded_one(pipeline, tmp_path) -> None:
    import mlflow

    from conftest import post_json, served_model

    workdir, _ = pipeline
    uri = f"sqlite:///{workdir}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    texts = ["Ein hund läuft auf der straße.", "Ein kleiner mann sitzt im park."]
    model_uri = f"models:/{MODEL}/1"
    expected = mlflow.pyfunc.load_model(model_uri).predict(texts)["generated"].tolist()
    with served_model(model_uri, uri, workdir, tmp_path / "serve.log") as base:
        for payload in ({"inputs": texts}, {"dataframe_records": [{"text": t} for t in texts]}):
            rows = post_json(f"{base}/invocations", payload)["predictions"]
            assert [r["generated"] for r in rows] == expected


def test_sources_and_targets_over_budget_are_cut_and_counted(pipeline) -> None:
    import mlflow
    import numpy as np

    from lmforge.data.datasets import SourceTargetPairs
    from lmforge.data.tokenization import TokenShards

    workdir, _ = pipeline
    shards = TokenShards(workdir / "data/shards", "train")
    pairs = SourceTargetPairs(shards, max_source_len=6, max_target_len=4)
    source_lengths = np.diff(shards.offsets)
    target_lengths = np.diff(shards.target_offsets)
    assert pairs.truncated_sources == int((source_lengths > 6).sum()) > 0
    assert pairs.truncated_targets == int((target_lengths > 4).sum()) > 0
    longest = int(np.argmax(target_lengths))
    source, target = pairs[longest]
    assert len(target) == 4 and target.tolist() == shards.target_record(longest)[:4].tolist()
    assert len(source) == min(6, source_lengths[longest])
    assert pairs.lengths.max() <= 6 + 4 + 3
    # The pipeline's own run logged its counts (none cut at its budgets of 24 tokens).
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lmforge-finetune").experiment_id])
    assert {
        "data/truncated_train_source",
        "data/truncated_train_target",
        "data/truncated_val_source",
        "data/truncated_val_target",
    } <= set(run.data.metrics)
