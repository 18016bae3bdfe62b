"""What the training and scoring stages share: the shards' metadata, the model config built from
``model.*`` and the data, and the record a stage leaves for the next one. Below every stage, so
stages never import each other."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.config import Config
from lmforge.errors import UserError


def shard_meta(cfg: Config) -> dict:
    path = Path(cfg.paths.shards) / "meta.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run the tokenize stage first (dvc repro tokenize)")
    return json.loads(path.read_text())


def model_config(cfg: Config, vocab_size: int) -> Any:
    from lmforge.config import HF_MODEL_KEYS
    from lmforge.models.transformer import TransformerConfig

    # `model.*` keys are TransformerConfig's own field names (but those naming a pretrained
    # checkpoint, model=hf); the vocabulary comes from the data.
    sizes = {k: v for k, v in asdict(cfg.model).items() if k not in HF_MODEL_KEYS}
    return TransformerConfig(vocab_size=vocab_size, pad_id=0, **sizes)


def upstream_meta(folder: Path, stage: str) -> dict:
    """``folder/meta.json`` written by ``stage``, or a one-line error saying to run it."""
    path = Path(folder) / "meta.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run the {stage} stage first")
    return json.loads(path.read_text())
