"""Which Hugging Face model an lmforge model folder becomes, and its weights under that
model's names: the mapping behind ``python -m lmforge.export`` (see that module's docstring).

Only torch here (inside functions): no transformers, so the mapping and its refusals answer
without importing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError
from lmforge.core.io import torch_load

# tanh(x) = x (1 - x^2/3 + ...): with |x| <= this the relative error is ~3e-7, below float32's
# rounding of a logit's sum, while the classifier weights (divided by the pooler's scale) stay
# far inside float16's range for ordinary weights.
POOLER_INPUT_BOUND = 1e-3


@dataclass
class Target:
    """What a model folder becomes: the Hugging Face class, its weights, config and framing."""

    architecture: str
    state_dict: dict[str, Any]
    config: dict[str, Any]
    # tokenizers' TemplateProcessing for one text: what lmforge puts around the text's ids.
    template: list[str]
    max_len: int
    generation: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); re-run the stage that wrote it"
        ) from None


def _encoder_weights(state: dict[str, Any], prefix: str, n_layers: int) -> dict[str, Any]:
    """Our ``Encoder`` parameters (under ``prefix``) as ``MegatronBertModel``'s (under ``bert.``)."""
    import torch

    emb = state[f"{prefix}tok_emb.weight"]
    out = {
        "bert.embeddings.word_embeddings.weight": emb,
        "bert.embeddings.position_embeddings.weight": state[f"{prefix}pos_emb.weight"],
        # One token type whose embedding is zero: BERT's segment embedding adds nothing.
        "bert.embeddings.token_type_embeddings.weight": torch.zeros(1, emb.shape[1], dtype=emb.dtype),
        "bert.encoder.ln.weight": state[f"{prefix}ln_f.weight"],
        "bert.encoder.ln.bias": state[f"{prefix}ln_f.bias"],
    }
    for i in range(n_layers):
        ours, theirs = f"{prefix}blocks.{i}.", f"bert.encoder.layer.{i}."
        # The fused qkv Linear's output features are [q | k | v], each d_model wide.
        for kind in ("weight", "bias"):
            q, k, v = state[f"{ours}attn.qkv.{kind}"].chunk(3, dim=0)
            out[f"{theirs}attention.self.query.{kind}"] = q
            out[f"{theirs}attention.self.key.{kind}"] = k
            out[f"{theirs}attention.self.value.{kind}"] = v
        for mine, hf in (
            ("ln1", "attention.ln"),
            ("attn.proj", "attention.output.dense"),
            ("ln2", "ln"),
            ("mlp.fc", "intermediate.dense"),
            ("mlp.proj", "output.dense"),
        ):
            for kind in ("weight", "bias"):
                out[f"{theirs}{hf}.{kind}"] = state[f"{ours}{mine}.{kind}"]
    return {name: tensor.contiguous() for name, tensor in out.items()}


def _lm_head_weights(state: dict[str, Any]) -> dict[str, Any]:
    """MaskedLM/PrefixLM's head as BERT's: the decoder weight is tied to the word embeddings."""
    return {
        "cls.predictions.transform.dense.weight": state["head_dense.weight"],
        "cls.predictions.transform.dense.bias": state["head_dense.bias"],
        "cls.predictions.transform.LayerNorm.weight": state["head_norm.weight"],
        "cls.predictions.transform.LayerNorm.bias": state["head_norm.bias"],
        "cls.predictions.bias": state["decoder.bias"],
    }


def _identity_pooler(state: dict[str, Any], d_model: int) -> tuple[dict[str, Any], float]:
    """A pooler whose ``tanh(dense(h))`` is ``s * h`` to float32 precision, and its ``s``.

    The final LayerNorm bounds every hidden state: a normalised component is at most
    ``sqrt(d - 1)`` in size, so ``|h_i| <= |gamma_i| sqrt(d - 1) + |beta_i|``.
    """
    import torch

    gamma, beta = state["encoder.ln_f.weight"].float(), state["encoder.ln_f.bias"].float()
    bound = float((gamma.abs() * (d_model - 1) ** 0.5 + beta.abs()).max())
    scale = POOLER_INPUT_BOUND / max(bound, 1e-6)
    dtype = gamma.dtype
    return {
        "bert.pooler.dense.weight": torch.eye(d_model, dtype=dtype) * scale,
        "bert.pooler.dense.bias": torch.zeros(d_model, dtype=dtype),
    }, scale


def _base_config(model: dict, *, pad_id: int, special: dict[str, int]) -> dict[str, Any]:
    return {
        "model_type": "megatron-bert",
        "vocab_size": model["vocab_size"],
        "hidden_size": model["d_model"],
        "num_hidden_layers": model["n_layers"],
        "num_attention_heads": model["n_heads"],
        "intermediate_size": model["d_ff"],
        "hidden_act": "gelu",  # exact (erf) GELU, as F.gelu
        "hidden_dropout_prob": model["dropout"],
        "attention_probs_dropout_prob": model["dropout"],
        "max_position_embeddings": model["max_len"],
        "type_vocab_size": 1,
        "layer_norm_eps": model["norm_eps"],
        "pad_token_id": pad_id,
        "bos_token_id": special["cls"],
        "eos_token_id": special["sep"],
        "tie_word_embeddings": True,
    }


def plan(folder: Path, token_logits: bool = False) -> Target:
    """Read an lmforge model folder and decide its Hugging Face form (see the module docstring);
    ``token_logits`` exports a mean-pooled classifier as a token classifier."""
    import torch

    from lmforge.data.tokenization import special_ids

    folder = Path(folder)
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; point at models/finetuned or models/pretrained")
    if not config_path.is_file():
        if (folder / "meta.json").is_file() and not _read_json(folder / "meta.json").get("enabled", True):
            raise UserError(
                f"{folder} holds no weights (pretraining was off: pretrain.enabled=false); "
                "export models/finetuned, or pretrain first"
            )
        raise UserError(
            f"{config_path} is missing; point at a folder the finetune or pretrain stage wrote "
            "(models/finetuned, models/pretrained)"
        )
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder / 'tokenizer.json'} is missing; re-run the stage that wrote {folder}")
    config = _read_json(config_path)
    special = special_ids()

    def weights(name: str) -> dict[str, Any]:
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} is missing; re-run the stage that wrote {folder}")
        return torch_load(path, "finetune" if "task" in config else "pretrain")

    if "task" not in config:  # models/pretrained: config.json is the TransformerConfig itself
        base = _base_config(config, pad_id=config["pad_id"], special=special)
        if not (folder / "lm.pt").is_file():  # ELECTRA keeps the discriminator's encoder only
            state = weights("encoder.pt")
            d = config["d_model"]
            mapped = {
                # MegatronBertModel's own names carry no "bert." prefix.
                name.removeprefix("bert."): tensor
                for name, tensor in _encoder_weights(state, "", config["n_layers"]).items()
            }
            # Its pooler (dense + tanh on the first token) is no part of our encoder: a fixed
            # identity dense, so pooler_output is tanh of the first hidden state, not noise.
            mapped["pooler.dense.weight"] = torch.eye(d, dtype=mapped["encoder.ln.weight"].dtype)
            mapped["pooler.dense.bias"] = torch.zeros(d, dtype=mapped["encoder.ln.weight"].dtype)
            return Target(
                "MegatronBertModel",
                mapped,
                base,
                template=["[CLS]", "$A", "[SEP]"],
                max_len=config["max_len"],
            )
        state = weights("lm.pt")
        mapped = {**_encoder_weights(state, "encoder.", config["n_layers"]), **_lm_head_weights(state)}
        if config.get("causal"):
            return _causal_target(mapped, base, config["max_len"], template=["[CLS]", "$A"])
        return Target("MegatronBertForMaskedLM", mapped, base, ["[CLS]", "$A", "[SEP]"], config["max_len"])

    task, model = config["task"], config["model"]
    base = _base_config(model, pad_id=model["pad_id"], special=special)
    from lmforge.core.task_registry import get_task

    return get_task(task).export_target(config, config_path, weights, base, token_logits)


def _refuse_extras(config_path: Path, what: str, extras: dict[str, Any], hint: str) -> None:
    """A clear error naming the options a model was finetuned with that no Hugging Face
    architecture holds (those of ``extras`` that are set)."""
    used = [f"{key}={value}" for key, value in extras.items() if value]
    if used:
        raise UserError(
            f"{config_path}: {what} ({', '.join(used)}), which no built-in Hugging Face model has; "
            f"finetune with {hint} to export it"
        )


def _causal_target(mapped: dict, base: dict, max_len: int, template: list[str]) -> Target:
    base = {**base, "is_decoder": True}
    generation = {
        "bos_token_id": base["bos_token_id"],
        "eos_token_id": base["eos_token_id"],
        "pad_token_id": base["pad_token_id"],
        "do_sample": False,
    }
    return Target("MegatronBertForCausalLM", mapped, base, template, max_len, generation)


def _label_maps(labels: list[str]) -> dict[str, Any]:
    return {
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
