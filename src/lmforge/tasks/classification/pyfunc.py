"""The finetuned classifier as an MLflow pyfunc model: raw text in, a label and the probability of
every class out (one row per text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from lmforge.core.config import CleanConfig
from lmforge.tracking.model_input import model_texts

PROB_PREFIX = "prob_"
EXAMPLE_TEXTS = [
    "Create a new event loop and run the coroutine until it completes.",
    "Return the widget's current configuration as a dictionary.",
]


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Raw text in, label and class probabilities out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        import torch
        from tokenizers import Tokenizer

        from lmforge.data.tokenization import special_ids
        from lmforge.models.transformer import classifier_from_config, input_len

        artifacts = context.artifacts
        config = json.loads(Path(artifacts["config"]).read_text())
        self.labels = [str(x) for x in json.loads(Path(artifacts["labels"]).read_text())]
        self.clean = CleanConfig(**json.loads(Path(artifacts["preprocessing"]).read_text()))
        self.tokenizer = Tokenizer.from_file(artifacts["tokenizer"])
        self.special = config.get("special_ids") or special_ids()
        # The encoder's max_len, or more where an n-gram model beside it reads more of a text.
        self.max_len = int(input_len({**config, "special_ids": self.special}))
        if "hf" in config:  # model=hf: `weights` is the save_pretrained folder
            from lmforge.models.hf import HFClassifier

            self.model = HFClassifier.load(Path(artifacts["weights"]), config["hf"]["trust_remote_code"])
        else:
            self.model = classifier_from_config({**config, "labels": self.labels})
            self.model.load_state_dict(
                torch.load(artifacts["weights"], map_location="cpu", weights_only=True)
            )
        self.model.eval()

    # model_input is deliberately unannotated: MLflow would derive a second signature from a type
    # hint, and the input is polymorphic (DataFrame with a text column, list of str, str).
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        from lmforge.data.cleaning import normalize_text
        from lmforge.data.datasets import pad_batch

        texts = [normalize_text(t, self.clean) for t in model_texts(model_input)]
        probabilities = []
        # The same encoding as training: [CLS] ids [SEP], no tokenizer-added specials, truncated.
        for start in range(0, len(texts), 64):
            encodings = self.tokenizer.encode_batch(texts[start : start + 64], add_special_tokens=False)
            items = [
                (torch.tensor([self.special["cls"], *e.ids[: self.max_len - 2], self.special["sep"]]), 0)
                for e in encodings
            ]
            batch = pad_batch(items, self.special["pad"])
            with torch.inference_mode():
                logits = self.model(batch["input_ids"], batch["attention_mask"])
            probabilities.append(torch.softmax(logits.float(), dim=-1))
        probs = torch.cat(probabilities) if probabilities else torch.empty(0, len(self.labels))
        frame = pd.DataFrame(
            probs.numpy().astype("float64"), columns=[PROB_PREFIX + name for name in self.labels]
        )
        frame.insert(0, "label", [self.labels[i] for i in probs.argmax(-1).tolist()])
        return frame
