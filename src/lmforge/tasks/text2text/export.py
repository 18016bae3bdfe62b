"""How a finetuned text2text model exports to a Hugging Face architecture
(``python -m lmforge.export``; the shared mapping helpers are :mod:`lmforge.models.export_plan`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError
from lmforge.models.export_plan import _causal_target, _encoder_weights, _lm_head_weights


def export_target(config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool) -> Any:
    model = config["model"]
    if config.get("prefix_lm", True):
        raise UserError(
            f"{config_path}: this text-to-text model reads its source both ways (task.prefix_lm="
            "true), which no built-in Hugging Face decoder-only model does; finetune with "
            "task.prefix_lm=false to export it"
        )
    state = weights("model.pt")
    mapped = {**_encoder_weights(state, "encoder.", model["n_layers"]), **_lm_head_weights(state)}
    return _causal_target(mapped, base, model["max_len"], template=["[CLS]", "$A", "[SEP]"])
