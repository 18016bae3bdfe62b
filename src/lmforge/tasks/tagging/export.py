"""How a finetuned tagging model exports to a Hugging Face architecture
(``python -m lmforge.export``; the shared mapping helpers are :mod:`lmforge.models.export_plan`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.models.export_plan import Target, _encoder_weights, _label_maps, _refuse_extras


def export_target(config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool) -> Any:
    model = config["model"]
    _refuse_extras(
        config_path,
        "this tagger adds word features, a character CNN, a BiLSTM or word vectors",
        {
            "task.word_feature_buckets": config.get("feature_buckets", 0),
            "task.char_cnn": config.get("char_cnn", 0),
            "task.context_lstm": config.get("context_lstm", 0),
            "vectors.enabled": bool(config.get("word_vectors")),
        },
        "them at 0",
    )
    state = weights("model.pt")
    mapped = {
        **_encoder_weights(state, "encoder.", model["n_layers"]),
        "classifier.weight": state["head.weight"],
        "classifier.bias": state["head.bias"],
    }
    base.update(_label_maps([str(tag) for tag in config["tags"]]))
    return Target(
        "MegatronBertForTokenClassification", mapped, base, ["[CLS]", "$A", "[SEP]"], config["max_len"]
    )
