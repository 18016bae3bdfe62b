"""The finetuned classifier in the Model Registry: promoted by alias, loaded and served.

On the tiny project's 2x2 sweep: ``lmforge.promote`` points ``champion`` at the best job; the
model loaded by alias labels raw sentences, reproducing the validation accuracy the run logged;
``mlflow models serve`` on the same alias answers over HTTP with the same labels and probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import post_json, served_model
from lmforge.core.config import Config, LoggerConfig
from lmforge.core.io import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.ci]

MODEL = "lmforge-classifier"
SENTENCES = [
    "Run the event loop until the future is done and return its result.",
    "Configure the canvas widget and redraw the window.",
    "Build the extension modules with the compiler found for this platform.",
    "Open the editor window and highlight the syntax of the file.",
]


@pytest.fixture(scope="module")
def champion(swept_project: Path):
    import mlflow

    from lmforge.promote import promote

    uri = f"sqlite:///{swept_project}/mlflow.db"
    done = promote("champion", "latest", Config(logger=LoggerConfig(tracking_uri=uri, experiment="basic")))
    mlflow.set_tracking_uri(uri)
    return swept_project, uri, done


def test_promote_points_the_alias_at_the_best_job_of_the_sweep(champion) -> None:
    import mlflow

    root, uri, done = champion
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(client.get_run(done.run_id).data.tags["mlflow.parentRunId"])
    assert done.run_id == parent.data.tags["lmforge.best_run_id"]
    assert done.score == pytest.approx(parent.data.metrics["best_val_f1"])
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == done.run_id


def test_model_by_alias_labels_raw_text_as_the_run_measured(champion) -> None:
    import mlflow
    import pandas as pd

    root, uri, done = champion
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    labels = [str(x) for x in json.loads((root / "data/prepared/labels.json").read_text())]
    out = model.predict(SENTENCES)
    assert list(out.columns) == ["label"] + [f"prob_{name}" for name in labels]
    assert len(out) == len(SENTENCES) and set(out["label"]) <= set(labels)
    assert out.drop(columns="label").sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    # A DataFrame with a text column gives the same answer as the list.
    assert model.predict(pd.DataFrame({"text": SENTENCES}))["label"].tolist() == out["label"].tolist()

    # The raw validation texts, through the model's own normalisation and tokenizer, score the
    # accuracy the finetuning run logged from the training-time token shards (max_epochs=1: the
    # logged epoch is the registered checkpoint).
    val = [r for r in read_jsonl(root / "data/prepared/val.jsonl") if r.get("label") is not None]
    predicted = model.predict([r["text"] for r in val])["label"].tolist()
    accuracy = sum(p == str(r["label"]) for p, r in zip(predicted, val, strict=True)) / len(val)
    logged = mlflow.MlflowClient(uri).get_run(done.run_id).data.metrics["val/accuracy"]
    assert accuracy == pytest.approx(logged, abs=1.5 / len(val))


def test_served_model_answers_over_http_like_the_loaded_one(champion, tmp_path: Path) -> None:
    import mlflow

    root, uri, _ = champion
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(SENTENCES)
    with served_model(f"models:/{MODEL}@champion", uri, root, tmp_path / "serve.log") as base:
        for payload in ({"dataframe_records": [{"text": t} for t in SENTENCES]}, {"inputs": SENTENCES}):
            rows = post_json(f"{base}/invocations", payload)["predictions"]
            assert [r["label"] for r in rows] == expected["label"].tolist()
            for row, (_, want) in zip(rows, expected.iterrows(), strict=True):
                for column in expected.columns[1:]:
                    assert row[column] == pytest.approx(want[column], abs=1e-6)
