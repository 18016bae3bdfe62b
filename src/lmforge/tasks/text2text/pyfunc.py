"""The finetuned text-to-text model as an MLflow pyfunc model: raw text in, generated text out
(one row per input, column ``generated``). Decoding follows the finetuning run's ``generate.*``
(greedy by default; finetune with ``generate.strategy=beam`` to register a beam-search model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from lmforge.core.config import CleanConfig, GenerateConfig
from lmforge.tracking.model_input import model_texts


class TextGenerator(mlflow.pyfunc.PythonModel):
    """Raw text in, generated text out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        import shutil
        import tempfile

        from lmforge.tasks.text2text.runtime import TextToTextModel

        artifacts = context.artifacts
        clean = CleanConfig(**json.loads(Path(artifacts["preprocessing"]).read_text()))
        self.options = GenerateConfig(**json.loads(Path(artifacts["decoding"]).read_text()))
        # TextToTextModel.load reads a folder; the artifacts may lie apart.
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(artifacts["weights"])
            if weights.is_dir():  # model=hf: the save_pretrained folder
                shutil.copytree(weights, Path(tmp) / "hf")
            else:
                shutil.copy(weights, Path(tmp) / "model.pt")
            files = [("config.json", "config"), ("tokenizer.json", "tokenizer")]
            if "retrieval" in artifacts:  # task.retrieval: the training pairs it searches
                files.append(("retrieval.json", "retrieval"))
            for name, file in files:
                shutil.copy(artifacts[file], Path(tmp) / name)
            self.runtime = TextToTextModel.load(Path(tmp), clean=clean)

    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        generated = self.runtime.generate(model_texts(model_input), self.options)
        return pd.DataFrame({"generated": generated.texts})
