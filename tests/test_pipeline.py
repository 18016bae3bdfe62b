"""End to end on the built-in corpus with the tiny experiment, every stage in this process.

Asserts real outputs: the shards decode back to text, the metrics beat the majority class, the
MLflow store holds the pretrain, finetune and evaluate runs with their metrics, one pipeline id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from lmforge import baselines, collect, evaluate, finetune, prepare, pretrain, report, tokenize
from lmforge.core.config import Config, validate
from lmforge.core.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(workdir: Path, *overrides: str) -> Config:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        raw = compose(
            "config",
            overrides=["experiment=tiny", f"logger.tracking_uri=sqlite:///{workdir}/mlflow.db", *overrides],
        )
    return validate(raw)


def finetune_apart(workdir: Path, tmp_path: Path, *overrides: str) -> Config:
    """The tiny experiment on the module's shards, finetuning into ``tmp_path`` with its own
    MLflow store: a variant that leaves the shared pipeline's outputs alone."""
    return tiny_config(
        workdir,
        *overrides,
        "finetune.max_epochs=1",
        "logger.registered_model=null",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"paths.finetuned={tmp_path}/finetuned",
        f"paths.metrics={tmp_path}/metrics",
        f"paths.plots={tmp_path}/plots",
        f"paths.checkpoints={tmp_path}/checkpoints",
    )


def served_predictions(tmp_path: Path, texts: list[str]):
    """The finetune run's logged pyfunc classifier (in ``tmp_path``'s MLflow store) on ``texts``,
    and the run."""
    import mlflow

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("lmforge-finetune").experiment_id])
    mlflow.set_tracking_uri(tracking)
    return mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/classifier").predict(texts), run


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, Config]:
    workdir = tmp_path_factory.mktemp("pipeline")
    (workdir / "conf").symlink_to(ROOT / "conf")
    cfg = tiny_config(workdir)
    os.environ["LMFORGE_PIPELINE_ID"] = "smoke-test"
    try:
        with working_dir(workdir):
            for stage in (collect, prepare, tokenize, pretrain, finetune, baselines, evaluate, report):
                stage.run(cfg)
    finally:
        os.environ.pop("LMFORGE_PIPELINE_ID")
    return workdir, cfg


def test_data_stages_produce_consistent_counts(pipeline) -> None:
    workdir, _ = pipeline
    raw = json.loads((workdir / "data/raw/meta.json").read_text())
    cleaning = json.loads((workdir / "data/prepared/cleaning.json").read_text())
    assert cleaning["input_rows"] == raw["records"] > 1000
    assert cleaning["input_rows"] == cleaning["kept"] + cleaning["dropped_total"]
    assert sum(cleaning["per_split"].values()) == cleaning["kept"]
    texts = {
        s: {r["text"] for r in read_jsonl(workdir / f"data/prepared/{s}.jsonl")}
        for s in ("train", "val", "test")
    }
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"]
    labels = json.loads((workdir / "data/prepared/labels.json").read_text())
    assert len(labels) == 4


def test_shards_decode_back_to_the_prepared_text(pipeline) -> None:
    from tokenizers import Tokenizer

    from lmforge.data.tokenization import TokenShards

    workdir, _ = pipeline
    shards = TokenShards(workdir / "data/shards", "val")
    assert shards.ids.dtype == np.uint16
    tokenizer = Tokenizer.from_file(str(workdir / "data/tokenizer/tokenizer.json"))
    first = next(read_jsonl(workdir / "data/prepared/val.jsonl"))["text"]
    decoded = tokenizer.decode(shards.record(0).tolist())
    assert decoded.split() == first.split()


def test_metrics_beat_the_majority_class(pipeline) -> None:
    workdir, _ = pipeline
    result = json.loads((workdir / "metrics/eval.json").read_text())
    majority = json.loads((workdir / "metrics/baselines.json").read_text())["majority_class"]
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= result[key] <= 1.0
    assert result["accuracy"] > majority["accuracy"] + 0.05
    assert len(result["per_class"]) == 4
    assert sum(c["support"] for c in result["per_class"].values()) == result["examples"]
    rows = (workdir / "plots/eval/confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == result["examples"] + 1
    assert (workdir / "plots/eval/confusion.png").stat().st_size > 1000


def test_mlflow_holds_the_three_runs_of_one_pipeline(pipeline) -> None:
    import mlflow

    workdir, _ = pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    runs = {}
    for stage in ("pretrain", "finetune", "evaluate"):
        experiment = client.get_experiment_by_name(f"lmforge-{stage}")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.tags["lmforge.pipeline_id"] == "smoke-test"
        assert run.data.tags["git.commit"]
        assert run.data.params["model.d_model"] == "32"
        runs[stage] = run
    assert "train/loss" in runs["pretrain"].data.metrics
    logged = runs["finetune"].data.metrics
    dropped = sum(v for k, v in logged.items() if k.startswith("data/dropped_"))
    assert logged["data/input_rows"] == logged["data/kept"] + dropped > 0
    assert "val/mlm_accuracy" in runs["pretrain"].data.metrics
    assert len(client.get_metric_history(runs["pretrain"].info.run_id, "train/loss")) > 1
    assert {"val/f1", "val/precision", "val/recall"} <= set(runs["finetune"].data.metrics)
    assert runs["finetune"].data.tags["lmforge.pretrain_run_id"] == runs["pretrain"].info.run_id
    assert {"test_accuracy", "test_f1", "test_precision", "test_recall"} <= set(runs["evaluate"].data.metrics)
    # Where it stands: the test accuracy minus each baseline's, in eval.json and on the run.
    standing = json.loads((workdir / "metrics/eval.json").read_text())["standing"]
    tfidf = json.loads((workdir / "metrics/baselines.json").read_text())["tfidf_logreg"]["accuracy"]
    assert standing["metric"] == "accuracy" and set(standing["vs"]) == {"majority_class", "tfidf_logreg"}
    assert standing["vs"]["tfidf_logreg"] == pytest.approx(standing["model"] - tfidf)
    evaluated = runs["evaluate"].data
    assert evaluated.metrics["test_accuracy_vs_tfidf_logreg"] == pytest.approx(standing["vs"]["tfidf_logreg"])
    assert evaluated.metrics["test_accuracy_vs_best_baseline"] == pytest.approx(standing["vs_best"])
    assert evaluated.tags["lmforge.baseline_wins"] == str(standing["baseline_wins"]).lower()
    artifacts = {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
    assert {"eval.json", "confusion.png", "config.yaml"} <= artifacts
    assert "tokenizer.json" in {a.path for a in client.list_artifacts(runs["pretrain"].info.run_id)}


def logged_table(client, run_id: str, name: str, folder: Path) -> list[dict]:
    """The rows of an ``mlflow.log_table`` artifact (``{"columns": [...], "data": [[...]]}``)."""
    table = json.loads(Path(client.download_artifacts(run_id, name, str(folder))).read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def test_runs_hold_the_learning_rate_f1_bars_and_the_wrong_examples(pipeline, tmp_path) -> None:
    """Issue 33: both training runs log ``train/lr`` along the schedule; finetune logs the
    validation F1 per class as a chart; evaluate logs the test F1 bars (PNG, and the CSV dvc.yaml
    plots) and the test examples it got wrong as a table (and plots/eval/errors.csv)."""
    import csv

    import mlflow

    workdir, cfg = pipeline
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    runs = {
        stage: client.search_runs([client.get_experiment_by_name(f"lmforge-{stage}").experiment_id])[0]
        for stage in ("pretrain", "finetune", "evaluate")
    }
    for stage in ("pretrain", "finetune"):
        history = client.get_metric_history(runs[stage].info.run_id, "train/lr")
        rates = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert len(rates) >= 2, stage
        # No warmup in the tiny experiment: linear decay from its lr (the stage's own for pretrain).
        assert all(0 < b < a for a, b in zip(rates, rates[1:], strict=False)), (stage, rates)
    assert rates[0] <= cfg.optim.lr
    finetune_files = {a.path for a in client.list_artifacts(runs["finetune"].info.run_id)}
    assert "val_f1.png" in finetune_files
    evaluate_id = runs["evaluate"].info.run_id
    assert {"f1.png", "f1.csv", "errors.csv", "test_errors.json"} <= {
        a.path for a in client.list_artifacts(evaluate_id)
    }
    result = json.loads((workdir / "metrics/eval.json").read_text())
    with open(workdir / "plots/eval/f1.csv", newline="") as handle:
        bars = {r["label"]: float(r["f1"]) for r in csv.DictReader(handle)}
    assert bars == pytest.approx({k: v["f1"] for k, v in result["per_class"].items()}, abs=1e-6)
    assert (workdir / "plots/eval/f1.png").stat().st_size > 1000
    # Four classes: no precision-recall curve.
    assert not (workdir / "plots/eval/pr.csv").exists()
    assert "test_average_precision" not in runs["evaluate"].data.metrics
    rows = logged_table(client, evaluate_id, "test_errors.json", tmp_path)
    with open(workdir / "plots/eval/confusion.csv", newline="") as handle:
        wrong = sum(r["actual"] != r["predicted"] for r in csv.DictReader(handle))
    assert len(rows) == wrong > 0
    tests = {r["text"].split()[0] for r in read_jsonl(workdir / "data/prepared/test.jsonl")}
    for row in rows:
        assert row["gold"] != row["predicted"] and row["gold"] in result["per_class"]
        assert 0 <= row["gold_probability"] <= row["probability"] <= 1
        assert row["text"].split()[0] in tests  # the test text, decoded
    assert [r["probability"] for r in rows] == sorted((r["probability"] for r in rows), reverse=True)
    with open(workdir / "plots/eval/errors.csv", newline="") as handle:
        assert [r["text"] for r in csv.DictReader(handle)] == [r["text"] for r in rows]


@pytest.mark.slow
@pytest.mark.ci
def test_a_binary_classifier_logs_its_precision_recall_curve(tmp_path) -> None:
    """Issue 33, two classes (the built-in corpus's two largest modules; ~55 s): evaluate draws
    the test precision-recall curve of the second label (PNG, and the CSV dvc.yaml plots) and
    logs its average precision, the area under that curve's steps."""
    import csv

    import mlflow

    (tmp_path / "conf").symlink_to(ROOT / "conf")
    cfg = tiny_config(tmp_path, "data.source.top_k=2", "pretrain.enabled=false", "finetune.max_epochs=1")
    with working_dir(tmp_path):
        for stage in (collect, prepare, tokenize, pretrain, finetune, evaluate):
            stage.run(cfg)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lmforge-evaluate").experiment_id])
    assert {"pr.png", "pr.csv", "f1.png", "test_errors.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    average = run.data.metrics["test_average_precision"]
    assert 0 < average <= 1
    with open(tmp_path / "plots/eval/pr.csv", newline="") as handle:
        points = [(float(r["recall"]), float(r["precision"])) for r in csv.DictReader(handle)]
    recall = [r for r, _ in points]
    assert recall == sorted(recall, reverse=True) and recall[0] == 1.0 and recall[-1] == 0.0
    # Average precision: the precisions weighted by each step's gain in recall.
    steps = sum((r0 - r1) * p0 for (r0, p0), (r1, _) in zip(points, points[1:], strict=False))
    assert steps == pytest.approx(average, abs=1e-4)
    assert (tmp_path / "plots/eval/pr.png").stat().st_size > 1000


def test_summary_names_the_figures_and_the_store(pipeline) -> None:
    workdir, _ = pipeline
    text = (workdir / "reports/summary.txt").read_text()
    assert "test      accuracy" in text and "mlflow ui --backend-store-uri" in text
    assert "\nstanding  test accuracy " in text and "the best baseline" in text


def test_evaluate_scores_any_labelled_file(pipeline, tmp_path) -> None:
    """eval.file reads a CSV in another schema and reproduces the test-split figures on it."""
    import csv

    workdir, cfg = pipeline
    test_rows = list(read_jsonl(workdir / "data/prepared/test.jsonl"))
    labelled = [r for r in test_rows if r.get("label") is not None]
    path = tmp_path / "held_out.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["module", "docstring"])
        writer.writerows((r["label"], r["text"]) for r in labelled)
    output = tmp_path / "out.json"
    file_cfg = tiny_config(
        workdir,
        f"eval.file={path}",
        f"eval.output={output}",
        "data.source.text_columns=[docstring]",
        "data.source.label_column=module",
    )
    with working_dir(workdir):
        evaluate.run(file_cfg)
    scored = json.loads(output.read_text())
    reference = json.loads((workdir / "metrics/eval.json").read_text())
    assert scored["examples"] == reference["examples"] == len(labelled)
    assert scored["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-6)
    assert scored["f1"] == pytest.approx(reference["f1"], abs=1e-6)


def test_evaluate_file_rejects_labels_the_model_does_not_know(pipeline, tmp_path) -> None:
    from lmforge.core.errors import UserError

    workdir, _ = pipeline
    path = tmp_path / "odd.csv"
    path.write_text("text,label\nsome docstring about sockets and ports,not_a_module\n")
    file_cfg = tiny_config(workdir, f"eval.file={path}")
    with working_dir(workdir), pytest.raises(UserError, match=r"odd.csv:2: label 'not_a_module'"):
        evaluate.run(file_cfg)


def test_disabled_pretraining_writes_every_declared_output(pipeline, tmp_path) -> None:
    """`pretrain.enabled=false` (the ablation) must still produce each output dvc.yaml declares."""
    workdir, _ = pipeline
    cfg = tiny_config(
        workdir,
        "pretrain.enabled=false",
        f"paths.pretrained={tmp_path}/pretrained",
        f"paths.metrics={tmp_path}/metrics",
        f"paths.plots={tmp_path}/plots",
    )
    with working_dir(workdir):
        pretrain.run(cfg)
    assert json.loads((tmp_path / "pretrained/meta.json").read_text())["enabled"] is False
    assert json.loads((tmp_path / "metrics/pretrain.json").read_text()) == {"enabled": False}
    assert (tmp_path / "plots/pretrain_loss.csv").read_text().startswith("step,")


def test_ema_weights_are_what_finetune_validates_and_saves(pipeline, tmp_path) -> None:
    """`finetune.ema_decay`: the best checkpoint holds the moving average (Lightning keeps the
    raw weights beside it), and the saved model is that average, not the last raw weights."""
    import mlflow
    import torch

    workdir, _ = pipeline
    cfg = finetune_apart(workdir, tmp_path, "finetune.ema_decay=0.9")
    with working_dir(workdir):
        finetune.run(cfg)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lmforge-finetune").experiment_id])
    best = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(tmp_path))
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    averaged = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    raw = {k.removeprefix("model."): v for k, v in checkpoint["current_model_state"].items()}
    saved = torch.load(tmp_path / "finetuned/model.pt", map_location="cpu", weights_only=True)
    assert saved.keys() == averaged.keys()
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert any(not torch.equal(averaged[k], raw[k]) for k in saved)


def test_word_vectors_reach_the_classifier_its_evaluation_and_its_served_model(pipeline, tmp_path) -> None:
    """`vectors.enabled=true` with task=classification: the word_vectors stage's output feeds the
    finetuned model, whose config keeps their shape; the test split, the same texts as a file
    (keyed from raw text, not shards) and the logged pyfunc model give the same predictions."""
    import csv

    from lmforge import word_vectors
    from lmforge.tasks.classification.scoring import load_classifier

    workdir, _ = pipeline
    options = [
        "vectors.enabled=true",
        "vectors.dim=8",
        "vectors.contexts=200",
        f"paths.word_vectors={tmp_path}/word_vectors",
    ]
    cfg = finetune_apart(workdir, tmp_path, *options)
    with working_dir(workdir):
        word_vectors.run(cfg)
        finetune.run(cfg)
        evaluate.run(cfg)
    meta = json.loads((tmp_path / "word_vectors/meta.json").read_text())
    config = json.loads((tmp_path / "finetuned/config.json").read_text())
    assert config["word_vectors"] == [meta["words"], 8]
    model, _, tokenizer, max_len = load_classifier(tmp_path / "finetuned")
    # Most of the test docstrings' words start with a word that has a vector.
    text = next(iter(read_jsonl(workdir / "data/prepared/test.jsonl")))["text"]
    ids = torch_ids(tokenizer, text, max_len)
    keys = model.word_keys(ids)
    hits = (model.vectors(keys).abs().sum(-1) > 0).sum().item()
    assert hits >= (keys > 0).sum().item() // 2 > 0

    reference = json.loads((tmp_path / "metrics/eval.json").read_text())
    rows = [r for r in read_jsonl(workdir / "data/prepared/test.jsonl") if r.get("label") is not None]
    path = tmp_path / "test.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *((r["text"], r["label"]) for r in rows)])
    with working_dir(workdir):
        evaluate.run(
            finetune_apart(
                workdir, tmp_path, *options, f"eval.file={path}", f"eval.output={tmp_path}/file.json"
            )
        )
    scored = json.loads((tmp_path / "file.json").read_text())
    assert scored["examples"] == reference["examples"] == len(rows)
    assert scored["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-6)

    served, _ = served_predictions(tmp_path, [r["text"] for r in rows])
    import torch

    with torch.no_grad():
        direct = [int(model(torch_ids(tokenizer, r["text"], max_len)).argmax()) for r in rows]
    labels = json.loads((tmp_path / "finetuned/config.json").read_text())["labels"]
    assert served["label"].tolist() == [str(labels[i]) for i in direct]


def torch_ids(tokenizer, text: str, max_len: int = 64):
    """``[CLS] text [SEP]`` ids as a [1, T] tensor, framed as finetuning frames them."""
    from lmforge.data.datasets import frame_record
    from lmforge.data.tokenization import special_ids

    special = special_ids()
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return frame_record(ids, max_len, special["cls"], special["sep"])[None]


def test_an_ensemble_starts_each_member_from_the_pretrained_encoder_and_votes_by_mean_probability(
    pipeline, tmp_path
) -> None:
    """`finetune.ensemble=2`: both members start from the pretrain stage's encoder with heads of
    their own, train apart, and the saved model (evaluation, the served pyfunc) predicts by their
    mean class probabilities; exporting it is refused in one line."""
    import torch

    from lmforge.core.errors import UserError
    from lmforge.core.task_registry import get_task
    from lmforge.lit.workspace import model_config, shard_meta
    from lmforge.models.export_plan import plan
    from lmforge.models.transformer import ClassifierEnsemble
    from lmforge.tasks.classification.scoring import load_classifier

    workdir, _ = pipeline
    cfg = finetune_apart(workdir, tmp_path, "finetune.ensemble=2")
    with working_dir(workdir):
        task = get_task("classification")
        meta = shard_meta(cfg)
        module = task.module(cfg, model_config(cfg, meta["vocab_size"]), meta, total_steps=10)
        task.load_pretrained(module, workdir / cfg.paths.pretrained)
        pretrained = torch.load(workdir / cfg.paths.pretrained / "encoder.pt", weights_only=True)
        first, second = module.model.members
        for member in (first, second):
            state = member.encoder.state_dict()
            assert all(torch.equal(state[k], pretrained[k]) for k in pretrained)
        assert not torch.equal(first.classifier.weight, second.classifier.weight)

        finetune.run(cfg)
        evaluate.run(cfg)
    model, labels, tokenizer, max_len = load_classifier(tmp_path / "finetuned")
    assert isinstance(model, ClassifierEnsemble) and len(model.members) == 2
    rows = [r for r in read_jsonl(workdir / "data/prepared/test.jsonl") if r.get("label") is not None][:40]
    with torch.no_grad():
        ids = [torch_ids(tokenizer, r["text"], max_len) for r in rows]
        mean = [torch.stack([m(x).softmax(-1) for m in model.members]).mean(0) for x in ids]
        voted = [model(x).softmax(-1) for x in ids]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(mean, voted, strict=True))
    trained = [dict(m.encoder.named_parameters()) for m in model.members]
    assert any(not torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert report["examples"] > 0 and 0.0 <= report["accuracy"] <= 1.0

    served, _ = served_predictions(tmp_path, [r["text"] for r in rows])
    assert served["label"].tolist() == [str(labels[int(p.argmax())]) for p in voted]
    with pytest.raises(UserError, match="finetune.ensemble=2"):
        plan(tmp_path / "finetuned", token_logits=True)


def test_the_fused_models_encoder_alone_is_the_model_without_the_fusion(pipeline, tmp_path) -> None:
    """Issue 34: the figure reported as "the encoder alone" is the finetune.ngram_fusion=false
    model's, to the digit: fitting the n-gram model draws nothing from the global generator,
    and a text longer than the encoder's max_len (the n-gram model reads up to 1,024 tokens)
    reaches the encoder exactly as the unfused model's data frames it."""
    workdir, _ = pipeline
    runs = {}
    for fused in (True, False):
        out = tmp_path / str(fused)
        cfg = finetune_apart(workdir, out, f"finetune.ngram_fusion={str(fused).lower()}")
        assert cfg.finetune.input_len() == (1024 if fused else cfg.finetune.max_len)
        with working_dir(workdir):
            finetune.run(cfg)
            evaluate.run(cfg)
        runs[fused] = [
            json.loads((out / "metrics" / f"{name}.json").read_text()) for name in ("finetune", "eval")
        ]
    (fused_fit, fused_eval), (plain_fit, plain_eval) = runs[True], runs[False]
    assert fused_fit["val_f1_encoder"] == plain_fit["best_val_f1"]
    assert fused_eval["encoder_accuracy"] == plain_eval["accuracy"]
    assert "encoder_accuracy" not in plain_eval and "ngram_weight" in fused_eval


def test_ngram_fusion_picks_its_weight_on_validation_and_the_saved_model_predicts_the_mix(
    pipeline, tmp_path
) -> None:
    """`finetune.ngram_fusion=true`: the n-gram model is fitted before finetuning, its weight is
    the best on validation (never worse than the classifier alone), and the saved model, its
    evaluation and the served pyfunc all predict by the mix."""
    import torch

    from lmforge.core.errors import UserError
    from lmforge.models.export_plan import plan
    from lmforge.tasks.classification.scoring import load_classifier

    workdir, _ = pipeline
    cfg = finetune_apart(workdir, tmp_path, "finetune.ngram_fusion=true", "finetune.ngram_buckets=65536")
    with working_dir(workdir):
        finetune.run(cfg)
        evaluate.run(cfg)
    metrics = json.loads((tmp_path / "metrics/finetune.json").read_text())
    assert 0.0 <= metrics["ngram_weight"] <= 0.95
    assert metrics["val_f1_fused"] >= metrics["best_val_f1"] - 1e-6
    assert json.loads((tmp_path / "finetuned/config.json").read_text())["ngram_buckets"] == 65536
    model, labels, tokenizer, max_len = load_classifier(tmp_path / "finetuned")
    assert float(model.ngram_weight) == pytest.approx(metrics["ngram_weight"])
    assert int((model.ngrams.weight != 0).any(-1).sum()) > 100  # fitted, and saved with it
    rows = [r for r in read_jsonl(workdir / "data/prepared/test.jsonl") if r.get("label") is not None][:40]
    with torch.no_grad():
        ids = [torch_ids(tokenizer, r["text"], max_len) for r in rows]
        saved = [model(x).softmax(-1) for x in ids]
        weight = float(model.ngram_weight) or 0.5  # a mix, whatever validation chose
        model.ngram_weight.fill_(weight)
        fused = [model(x).softmax(-1) for x in ids]
        model.ngram_weight.zero_()
        mixed = [(1 - weight) * model(x).softmax(-1) + weight * model.ngrams(x).softmax(-1) for x in ids]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fused, mixed, strict=True))

    served, run = served_predictions(tmp_path, [r["text"] for r in rows])
    assert run.data.metrics["ngram_weight"] == pytest.approx(metrics["ngram_weight"])
    assert served["label"].tolist() == [str(labels[int(p.argmax())]) for p in saved]
    with pytest.raises(UserError, match="finetune.ngram_fusion=True"):
        plan(tmp_path / "finetuned", token_logits=True)
