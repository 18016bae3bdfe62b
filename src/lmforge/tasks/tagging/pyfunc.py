"""The finetuned tagger as an MLflow pyfunc model: sentences in, one tag per word out.

A sentence is a string (split into words at whitespace) or a list of words (pre-split, e.g. a
tokenized treebank sentence). Accepted: a DataFrame with a ``words`` column (lists) or a ``text``
column (strings), a list of strings or of word lists, ``{"words": [...]}``/``{"text": [...]}``.
Each word is normalised as in training and encoded the same way (:mod:`lmforge.data.tagging`).
Output: one row per sentence with ``words`` and ``tags`` (lists of equal length).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from lmforge.core.config import CleanConfig

EXAMPLE_SENTENCES = ["The quick brown fox jumps over the lazy dog .", "I saw her duck yesterday in Paris ."]


def model_sentences(model_input: Any) -> list[list[str]]:
    """The sentences of a request as word lists (see the module docstring)."""
    if isinstance(model_input, pd.DataFrame):
        column = (
            "words"
            if "words" in model_input.columns
            else "text"
            if "text" in model_input.columns
            else model_input.columns[0]
        )
        values = model_input[column].tolist()
    elif isinstance(model_input, dict):
        values = list(model_input.get("words", model_input.get("text", [])))
    elif isinstance(model_input, (str, pd.Series)):
        values = [model_input] if isinstance(model_input, str) else model_input.tolist()
    else:
        values = list(model_input.tolist() if hasattr(model_input, "tolist") else model_input)
    sentences = []
    for value in values:
        if hasattr(value, "tolist"):
            value = value.tolist()
        sentences.append(str(value).split() if isinstance(value, str) else [str(w) for w in value])
    return sentences


class TextTagger(mlflow.pyfunc.PythonModel):
    """Sentences in, a tag per word out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        import torch
        from tokenizers import Tokenizer

        from lmforge.data.tokenization import special_ids
        from lmforge.models.tagger import tagger_from_config

        artifacts = context.artifacts
        config = json.loads(Path(artifacts["config"]).read_text())
        self.tags = [str(t) for t in json.loads(Path(artifacts["tags"]).read_text())]
        self.clean = CleanConfig(**json.loads(Path(artifacts["preprocessing"]).read_text()))
        self.tokenizer = Tokenizer.from_file(artifacts["tokenizer"])
        self.max_len = int(config["max_len"])
        self.special = config.get("special_ids") or special_ids()
        if "hf" in config:  # model=hf: `weights` is the save_pretrained folder
            from lmforge.models.hf import HFTagger

            self.model = HFTagger.load(Path(artifacts["weights"]), config["hf"]["trust_remote_code"])
        else:
            self.model = tagger_from_config({**config, "tags": self.tags})
            self.model.load_state_dict(
                torch.load(artifacts["weights"], map_location="cpu", weights_only=True)
            )
        self.model.eval()

    # model_input is deliberately unannotated: MLflow would derive a signature from a type hint,
    # and the input is polymorphic (strings or word lists).
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from lmforge.data.cleaning import normalize_text
        from lmforge.data.tagging import TaggedWindows, plain_sentences
        from lmforge.tasks.tagging.scoring import loader, predict_words

        # As eval.file does: a word that normalises to nothing keeps its raw form (one tag per
        # word given, always).
        words = [
            [normalize_text(w, self.clean) or w for w in sentence]
            for sentence in model_sentences(model_input)
        ]
        tags: list[list[str]] = [[] for _ in words]
        filled = [i for i, sentence in enumerate(words) if sentence]
        if filled:
            sentences = plain_sentences(self.tokenizer, [words[i] for i in filled], self.special["unk"])
            data = TaggedWindows(sentences, self.max_len, self.special["cls"], self.special["sep"])
            predicted, _ = predict_words(self.model, loader(data, 64, self.special["pad"]))
            start = 0
            for i in filled:
                tags[i] = [self.tags[t] for t in predicted[start : start + len(words[i])]]
                start += len(words[i])
        return pd.DataFrame({"words": words, "tags": tags})
