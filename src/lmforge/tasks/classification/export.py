"""How a finetuned classification model exports to a Hugging Face architecture
(``python -m lmforge.export``; the shared mapping helpers are :mod:`lmforge.models.export_plan`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError
from lmforge.models.export_plan import Target, _encoder_weights, _identity_pooler, _label_maps, _refuse_extras


def export_target(config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool) -> Any:
    model = config["model"]
    ensemble = config.get("ensemble", 1)
    _refuse_extras(
        config_path,
        "this classifier is an ensemble, adds word vectors or mixes in an n-gram model",
        {
            "finetune.ensemble": ensemble if ensemble > 1 else 0,
            "vectors.enabled": bool(config.get("word_vectors")),
            "finetune.ngram_fusion": bool(config.get("ngram_buckets")),
        },
        "finetune.ensemble=1, vectors.enabled=false and finetune.ngram_fusion=false",
    )
    mean_pooled = config.get("pooling") != "cls"
    if mean_pooled and not token_logits:
        raise UserError(
            f"{config_path}: this classifier pools by the mean over tokens (finetune.pooling="
            f"{config.get('pooling')}), which no built-in Hugging Face sequence classifier "
            "does; finetune with finetune.pooling=cls to export it, or pass --token-logits "
            "for a token classifier whose logits averaged over the real tokens are lmforge's"
        )
    state = weights("model.pt")
    mapped = _encoder_weights(state, "encoder.", model["n_layers"])
    base.update(_label_maps([str(name) for name in config["labels"]]))
    weight, bias = state["classifier.weight"], state["classifier.bias"]
    if mean_pooled:
        architecture = "MegatronBertForTokenClassification"
    else:
        architecture = "MegatronBertForSequenceClassification"
        pooler, scale = _identity_pooler(state, model["d_model"])
        mapped.update(pooler)
        weight = weight / scale
    mapped.update({"classifier.weight": weight, "classifier.bias": bias})
    return Target(architecture, mapped, base, ["[CLS]", "$A", "[SEP]"], config["max_len"])
