"""The finetuned classifier as an MLflow Model that takes raw text, and its Model Registry entry.

``mlflow.pyfunc.load_model("models:/lmforge-classifier@champion").predict(["some text"])`` (or a
DataFrame with a ``text`` column) returns one row per text: ``label`` and ``prob_<label>`` for
every class. The weights, model config, tokenizer, label names and text normalisation are bundled
as the model's artifacts, so it needs no project folder, only an environment with lmforge
installed (``mlflow models serve -m models:/lmforge-classifier@champion --env-manager local``).

Also logs the finetuning run's other artifacts: best and last checkpoints and a per-class report
on the validation split.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from lmforge.config import CleanConfig, Config

# Logging a model copies its artifacts with one progress bar per file: noise in the stage's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MODEL_NAME = "classifier"  # the artifact folder of the model within its run
PROB_PREFIX = "prob_"
EXAMPLE_TEXTS = ["Create a new event loop and run the coroutine until it completes.",
                 "Return the widget's current configuration as a dictionary."]


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict) and "text" in model_input:
        return _texts(list(model_input["text"]))
    return [str(t) for t in model_input]


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Raw text in, label and class probabilities out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        import torch
        from tokenizers import Tokenizer

        from lmforge.data.tokenization import special_ids
        from lmforge.models.transformer import SequenceClassifier, TransformerConfig

        artifacts = context.artifacts
        config = json.loads(Path(artifacts["config"]).read_text())
        self.labels = [str(x) for x in json.loads(Path(artifacts["labels"]).read_text())]
        self.clean = CleanConfig(**json.loads(Path(artifacts["preprocessing"]).read_text()))
        self.tokenizer = Tokenizer.from_file(artifacts["tokenizer"])
        self.max_len = int(config["max_len"])
        self.special = special_ids()
        self.model = SequenceClassifier(TransformerConfig(**config["model"]),
                                        num_labels=len(self.labels), pooling=config["pooling"])
        self.model.load_state_dict(torch.load(artifacts["weights"], map_location="cpu",
                                              weights_only=True))
        self.model.eval()

    # model_input is deliberately unannotated: MLflow would derive a second signature from a type
    # hint, and the input is polymorphic (DataFrame with a text column, list of str, str).
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        import torch

        from lmforge.data.cleaning import normalize_text
        from lmforge.data.datasets import pad_batch

        texts = [normalize_text(t, self.clean) for t in _texts(model_input)]
        probabilities = []
        # The same encoding as training: [CLS] ids [SEP], no tokenizer-added specials, truncated.
        for start in range(0, len(texts), 64):
            encodings = self.tokenizer.encode_batch(texts[start:start + 64], add_special_tokens=False)
            items = [(torch.tensor([self.special["cls"], *e.ids[: self.max_len - 2],
                                    self.special["sep"]]), 0) for e in encodings]
            batch = pad_batch(items, self.special["pad"])
            with torch.inference_mode():
                logits = self.model(batch["input_ids"], batch["attention_mask"])
            probabilities.append(torch.softmax(logits.float(), dim=-1))
        probs = torch.cat(probabilities) if probabilities else torch.empty(0, len(self.labels))
        frame = pd.DataFrame(probs.numpy().astype("float64"),
                             columns=[PROB_PREFIX + name for name in self.labels])
        frame.insert(0, "label", [self.labels[i] for i in probs.argmax(-1).tolist()])
        return frame


def _pip_requirements() -> list[str]:
    """Pinned from the running environment: MLflow's own inference would load the model in a
    subprocess just to list them, a slow step for every finetuning run."""
    from importlib.metadata import version

    names = ("torch", "tokenizers", "numpy", "pandas", "mlflow", "lightning", "torchmetrics",
             "omegaconf")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_classifier(cfg: Config, folder: Path) -> Any:
    """Log ``folder`` (the finetune stage's output) as a pyfunc model of the active run; register
    it under ``logger.registered_model`` unless that is null. Returns MLflow's ModelInfo."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    config = json.loads((folder / "config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.json"
        labels.write_text(json.dumps(config["labels"]))
        preprocessing = Path(tmp) / "preprocessing.json"
        preprocessing.write_text(json.dumps(asdict(cfg.data.clean)))
        artifacts = {"weights": str(folder / "model.pt"), "config": str(folder / "config.json"),
                     "tokenizer": str(folder / "tokenizer.json"), "labels": str(labels),
                     "preprocessing": str(preprocessing)}
        example = pd.DataFrame({"text": EXAMPLE_TEXTS})
        model = TextClassifier()
        model.load_context(type("Context", (), {"artifacts": artifacts})())
        # One unnamed string column: MLflow then accepts a list of strings as well as a DataFrame
        # whose single column is `text` (a named column would reject the list).
        signature = infer_signature(example, model.predict(None, example))
        signature = ModelSignature(inputs=Schema([ColSpec(DataType.string)]),
                                   outputs=signature.outputs)
        # MLflow warns against pickled models (it prefers models-from-code); this pickle holds no
        # state, only the class reference: load_context rebuilds everything from the artifacts.
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        try:
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=model, artifacts=artifacts, signature=signature,
                input_example=example, pip_requirements=_pip_requirements(),
                registered_model_name=cfg.logger.registered_model or None)
        finally:
            pyfunc_log.setLevel(level)


def log_checkpoints(best: str | None, last: str | None) -> None:
    """Lightning's best (by val F1) and last checkpoints, as ``checkpoints/best.ckpt`` and
    ``checkpoints/last.ckpt`` of the run, whatever Lightning named them (it versions a file name
    another callback already uses in the folder: ``last-v1.ckpt``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("best.ckpt", best), ("last.ckpt", last)):
            if path and Path(path).is_file():
                link = Path(tmp) / name
                link.symlink_to(Path(path).resolve())  # logged as the file's content, not copied here
                mlflow.log_artifact(str(link), "checkpoints")


def log_val_report(model: Any, loader: Any, labels: list, path: Path) -> dict:
    """Per-class precision, recall, F1 and support of ``model`` on the validation split, as a JSON
    artifact and as ``val_f1_class_<label>`` metrics."""
    from lmforge.evaluate import report, score

    model.eval()
    overall, per_class, matrix, _, _ = score(model, loader, len(labels))
    result = report(labels, overall, per_class, matrix.sum(dim=1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    mlflow.log_artifact(str(path))
    mlflow.log_metrics({f"val_f1_class_{name}": v["f1"] for name, v in result["per_class"].items()})
    return result
