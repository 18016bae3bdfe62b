"""Finetuned models as MLflow Models that take raw text, and their Model Registry entries.

Each task brings its own ``mlflow.pyfunc.PythonModel`` (``lmforge.tasks.<task>.pyfunc``): the
classifier returns ``label`` and ``prob_<label>`` per text, the text-to-text model the generated
text. This module logs any of them the same way: the weights, model config, tokenizer and text
normalisation are bundled as the model's artifacts, so it needs no project folder, only an
environment with lmforge installed
(``mlflow models serve -m models:/lmforge-classifier@champion --env-manager local``).

Also logs the finetuning run's best and last checkpoints.
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

from lmforge.core.config import Config
from lmforge.tracking.model_input import model_texts as model_texts  # re-exported: its old home

# Logging a model copies its artifacts with one progress bar per file: noise in the stage's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MODEL_NAME = "classifier"  # the artifact folder of the model within its run (kept for every task)


def _pip_requirements(hf: bool = False) -> list[str]:
    """Pinned from the running environment: MLflow's own inference would load the model in a
    subprocess just to list them, a slow step for every finetuning run. ``hf``: a ``model=hf``
    model, which needs ``transformers`` (not peft: adapters are merged before saving)."""
    from importlib.metadata import version

    names = ("torch", "tokenizers", "numpy", "pandas", "mlflow", "lightning", "torchmetrics", "omegaconf")
    names += ("transformers", "safetensors") if hf else ()
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_pyfunc(
    cfg: Config,
    folder: Path,
    model: Any,
    example_texts: list[str],
    extra: dict[str, Any] | None = None,
    free_input: bool = False,
    files: dict[str, Path] | None = None,
) -> Any:
    """Log ``folder`` (the finetune stage's output) with the task's pyfunc ``model`` in the
    active run; register it under ``logger.registered_model`` unless that is null. ``extra``
    values are written as JSON artifacts of the same names; ``files`` (files the folder already
    holds) are logged as they are, under the given artifact names. ``free_input``: no input
    schema, for a model that takes more than strings (the tagger also takes lists of words).
    Returns MLflow's ModelInfo."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    with tempfile.TemporaryDirectory() as tmp:
        preprocessing = Path(tmp) / "preprocessing.json"
        preprocessing.write_text(json.dumps(asdict(cfg.data.clean)))
        hf_folder = folder / "hf"  # model=hf: the save_pretrained folder stands for model.pt
        artifacts = {
            "weights": str(hf_folder if hf_folder.is_dir() else folder / "model.pt"),
            "config": str(folder / "config.json"),
            "tokenizer": str(folder / "tokenizer.json"),
            "preprocessing": str(preprocessing),
        }
        for name, value in (extra or {}).items():
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(value))
            artifacts[name] = str(path)
        artifacts.update({name: str(path) for name, path in (files or {}).items()})
        example = pd.DataFrame({"text": example_texts})
        model.load_context(type("Context", (), {"artifacts": artifacts})())
        # One unnamed string column: MLflow then accepts a list of strings as well as a DataFrame
        # whose single column is `text` (a named column would reject the list).
        signature = infer_signature(example, model.predict(None, example))
        signature = ModelSignature(
            inputs=None if free_input else Schema([ColSpec(DataType.string)]), outputs=signature.outputs
        )
        # MLflow warns against pickled models (it prefers models-from-code); this pickle holds no
        # state, only the class reference: load_context rebuilds everything from the artifacts.
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        try:
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=model,
                artifacts=artifacts,
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(hf_folder.is_dir()),
                registered_model_name=cfg.logger.registered_model or None,
            )
        finally:
            pyfunc_log.setLevel(level)


def log_checkpoints(best: str | None, last: str | None) -> None:
    """Lightning's best (by the task's validation figure) and last checkpoints, as
    ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt`` of the run, whatever Lightning named
    them (it versions a file name another callback already uses in the folder: ``last-v1.ckpt``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("best.ckpt", best), ("last.ckpt", last)):
            if path and Path(path).is_file():
                link = Path(tmp) / name
                link.symlink_to(Path(path).resolve())  # logged as the file's content, not copied here
                mlflow.log_artifact(str(link), "checkpoints")
