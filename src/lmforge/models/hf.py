"""Pretrained Hugging Face checkpoints behind the interfaces of lmforge's own models.

``model=hf`` finetunes a ``transformers`` checkpoint with the same tasks, scoring and pyfunc
models as lmforge's Transformer: each wrapper here answers the calls those make of
:class:`~lmforge.models.transformer.SequenceClassifier` (logits from ids and mask),
:class:`~lmforge.models.tagger.TokenTagger` (per-position logits) and
:class:`~lmforge.models.decoder.PrefixLM` (target loss and log-likelihood from a framed batch),
around the ``AutoModelFor*`` class that fits the task. LoRA adapters (``peft``) are applied on
request and merged into the weights when the model is saved, so a finetuned folder is a plain
``save_pretrained`` folder that ``AutoModelFor*.from_pretrained`` loads.

Plain PyTorch plus ``transformers``/``peft``, imported inside functions: importing this module
costs nothing, and the default pipeline never loads either library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass
class Checkpoint:
    """Where a pretrained checkpoint comes from (``model.name_or_path``, ``model.revision``,
    ``model.trust_remote_code``)."""

    name_or_path: str
    revision: str | None = None
    trust_remote_code: bool = False

    def options(self) -> dict[str, Any]:
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}


@dataclass
class Lora:
    """LoRA options (``model.lora.*``)."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = field(default=None)


def saved(auto: Any, folder: Path, trust_remote_code: bool) -> Any:
    """``auto.from_pretrained(folder)`` of a folder a stage saved (``models/finetuned/hf``,
    ``models/pretrained/hf``): a missing, truncated or corrupt ``config.json`` or weights file
    is one line naming the folder and the stage to rerun."""
    from lmforge.core.io import damaged, rerun

    stage = "pretrain" if Path(folder).parent.name == "pretrained" else "finetune"
    try:
        return auto.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError, safetensors' SafetensorError, JSON errors, ...
        what = "not a loadable Hugging Face model folder (truncated or corrupt)"
        raise damaged(folder, what, exc, rerun(stage)) from None


def load_tokenizer(checkpoint: Checkpoint) -> Any:
    """The checkpoint's own fast tokenizer (through the hub's cache; ``HF_HUB_OFFLINE`` holds).
    A slow (Python) tokenizer is refused: the shards are encoded by its ``tokenizers`` backend."""
    from transformers import AutoTokenizer

    from lmforge.core.errors import UserError

    tokenizer = AutoTokenizer.from_pretrained(checkpoint.name_or_path, **checkpoint.options())
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"model.name_or_path={checkpoint.name_or_path}: its tokenizer has no fast "
            "(`tokenizers`) version; pick a checkpoint that ships tokenizer.json"
        )
    return tokenizer


def tokenizer_special_ids(tokenizer: Any) -> dict[str, int | None]:
    """The checkpoint's tokens in lmforge's roles: ``cls`` opens a text (BERT's [CLS], a
    decoder's BOS), ``sep`` closes it (BERT's [SEP], an EOS), ``pad`` pads (EOS where the
    tokenizer has no pad token, as GPT-2). None where the checkpoint has no such token."""

    def first(*names: str) -> int | None:
        for name in names:
            value = getattr(tokenizer, name, None)
            if value is not None:
                return int(value)
        return None

    return {
        "pad": first("pad_token_id", "eos_token_id"),
        "unk": first("unk_token_id", "eos_token_id"),
        "cls": first("cls_token_id", "bos_token_id"),
        "sep": first("sep_token_id", "eos_token_id"),
        "mask": first("mask_token_id"),
    }


def is_encoder_decoder(checkpoint: Checkpoint) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint.name_or_path, **checkpoint.options())
    return bool(getattr(config, "is_encoder_decoder", False))


def _with_lora(model: Any, lora: Lora | None, task_type: str) -> Any:
    if lora is None or not lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    # Sequence and token classification keep the new head trainable (peft's modules_to_save).
    return get_peft_model(model, config)


class HFModel(nn.Module):
    """A ``transformers`` model (or its peft wrapper) held as ``self.hf``."""

    def __init__(self, hf: Any) -> None:
        super().__init__()
        # from_pretrained returns a model in eval mode; Lightning keeps a submodule's mode, so
        # dropout would stay off through training. Callers that score call .eval() themselves.
        self.hf = hf.train()

    def merged(self) -> Any:
        """The plain ``transformers`` model: LoRA adapters, if any, merged into its weights."""
        if hasattr(self.hf, "merge_and_unload"):
            self.hf = self.hf.merge_and_unload()
        return self.hf

    def save(self, folder: Path) -> None:
        """``config.json`` and ``model.safetensors`` (adapters merged), loadable by
        ``AutoModelFor*.from_pretrained(folder)`` without peft."""
        self.merged().save_pretrained(str(folder))

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class HFClassifier(HFModel):
    """``AutoModelForSequenceClassification``: ``forward(input_ids, attention_mask) -> logits``."""

    @classmethod
    def pretrained(
        cls, checkpoint: Checkpoint, num_labels: int, pad_id: int | None, lora: Lora | None = None
    ) -> HFClassifier:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            checkpoint.name_or_path, num_labels=num_labels, **checkpoint.options()
        )
        if model.config.pad_token_id is None and pad_id is not None:
            model.config.pad_token_id = pad_id  # decoders (GPT-2) pool at the last non-pad token
        return cls(_with_lora(model, lora, "SEQ_CLS"))

    @classmethod
    def load(cls, folder: Path, trust_remote_code: bool = False) -> HFClassifier:
        from transformers import AutoModelForSequenceClassification

        return cls(saved(AutoModelForSequenceClassification, folder, trust_remote_code))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask.long()).logits


class HFTagger(HFModel):
    """``AutoModelForTokenClassification``: logits at every position (word features unused:
    the checkpoint's own vocabulary and pretraining carry what they would)."""

    @classmethod
    def pretrained(cls, checkpoint: Checkpoint, num_tags: int, lora: Lora | None = None) -> HFTagger:
        from transformers import AutoModelForTokenClassification

        model = AutoModelForTokenClassification.from_pretrained(
            checkpoint.name_or_path, num_labels=num_tags, **checkpoint.options()
        )
        return cls(_with_lora(model, lora, "TOKEN_CLS"))

    @classmethod
    def load(cls, folder: Path, trust_remote_code: bool = False) -> HFTagger:
        from transformers import AutoModelForTokenClassification

        return cls(saved(AutoModelForTokenClassification, folder, trust_remote_code))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: Any = None
    ) -> torch.Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask.long()).logits


class HFTextToText(HFModel):
    """A text-to-text model: ``AutoModelForSeq2SeqLM`` when the checkpoint is an
    encoder-decoder (T5, BART), else ``AutoModelForCausalLM`` (GPT-2) reading
    ``[BOS] source [EOS]`` and writing ``target [EOS]`` causally (a decoder checkpoint has no
    bidirectional prefix; ``task.prefix_lm`` does not apply)."""

    def __init__(self, hf: Any, encoder_decoder: bool) -> None:
        super().__init__(hf)
        self.encoder_decoder = encoder_decoder

    @classmethod
    def pretrained(cls, checkpoint: Checkpoint, lora: Lora | None = None) -> HFTextToText:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        encoder_decoder = is_encoder_decoder(checkpoint)
        auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(checkpoint.name_or_path, **checkpoint.options())
        return cls(
            _with_lora(model, lora, "SEQ_2_SEQ_LM" if encoder_decoder else "CAUSAL_LM"), encoder_decoder
        )

    @classmethod
    def load(cls, folder: Path, trust_remote_code: bool = False) -> HFTextToText:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = saved(AutoConfig, folder, trust_remote_code)
        encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
        return cls(saved(auto, folder, trust_remote_code), encoder_decoder)

    def _scored_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits [N, V] and targets [N] at the N scored positions, and those positions
        (flat indices into ``labels``). Causal: ``labels`` already shifted (the token after
        each position, :func:`lmforge.data.prefix_lm.text_to_text_batch`); encoder-decoder:
        ``labels`` are the decoder's targets (the model shifts them right itself)."""
        if self.encoder_decoder:
            logits = self.hf(input_ids=input_ids, attention_mask=attention_mask.long(), labels=labels).logits
        else:
            logits = self.hf(input_ids=input_ids, attention_mask=attention_mask.long()).logits
        scored = labels.flatten() != IGNORE_INDEX
        positions = torch.nonzero(scored).squeeze(1)
        return logits.flatten(0, 1)[scored], labels.flatten()[scored], positions

    def target_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_mask: Any, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over target tokens: ``(loss, logits [N, V], targets [N])``, as
        :meth:`lmforge.models.decoder.PrefixLM.target_loss`."""
        logits, targets, _ = self._scored_logits(input_ids, attention_mask, labels)
        return F.cross_entropy(logits.float(), targets), logits, targets

    def target_log_likelihood(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_mask: Any, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: summed target log-probability and target count."""
        logits, targets, positions = self._scored_logits(input_ids, attention_mask, labels)
        token_ll = -F.cross_entropy(logits.float(), targets, reduction="none")
        rows = positions // labels.shape[1]
        b = labels.shape[0]
        ll = torch.zeros(b, device=token_ll.device).index_add_(0, rows, token_ll)
        counts = torch.zeros(b, dtype=torch.long, device=rows.device).index_add_(
            0, rows, torch.ones_like(rows)
        )
        return ll, counts


class HFLanguageModel(HFModel):
    """Continued (domain-adaptive) pretraining of a checkpoint with its own objective:
    ``AutoModelForMaskedLM`` for an encoder (``objective="mlm"``), ``AutoModelForCausalLM`` for a
    decoder (``"clm"``). ``forward(inputs, positions, targets) -> (loss, logits at positions)``,
    as :class:`lmforge.models.transformer.MaskedLM`, so :class:`lmforge.lit.mlm.LitMaskedLM`
    trains either. Inputs are packed windows without padding (no attention mask)."""

    @classmethod
    def pretrained(cls, checkpoint: Checkpoint, objective: str) -> HFLanguageModel:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

        from lmforge.core.errors import UserError

        name = checkpoint.name_or_path
        config = AutoConfig.from_pretrained(name, **checkpoint.options())
        if getattr(config, "is_encoder_decoder", False):
            raise UserError(
                f"model.name_or_path={name}: continued pretraining of an encoder-decoder "
                f"({config.model_type}) is not built (its objective, span corruption, is not "
                "lmforge's); set pretrain.enabled=false to finetune it as published"
            )
        auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
        try:
            model = auto.from_pretrained(name, **checkpoint.options())
        except ValueError as error:  # transformers: "Unrecognized configuration class ..."
            other = "clm" if objective == "mlm" else "mlm"
            raise UserError(
                f"model.name_or_path={name}: a {config.model_type} checkpoint has no "
                f"{'masked' if objective == 'mlm' else 'causal'} LM head in transformers; continue "
                f"its pretraining with pretrain={other}, or set pretrain.enabled=false"
            ) from error
        model = cls(model)
        if objective == "clm" and not model.is_causal():
            raise UserError(
                f"model.name_or_path={name}: a {config.model_type} checkpoint attends both ways "
                "(an encoder), so next-token prediction would see the answer; continue its "
                "pretraining with pretrain=mlm, or set pretrain.enabled=false"
            )
        return model

    @torch.no_grad()
    def is_causal(self) -> bool:
        """Whether position 0's output ignores later tokens (a decoder), probed on one
        random sequence."""
        was_training = self.hf.training
        self.hf.eval()
        vocab = self.hf.get_input_embeddings().num_embeddings
        ids = torch.randint(0, vocab, (1, 8), generator=torch.Generator().manual_seed(0))
        changed = ids.clone()
        changed[0, -1] = (changed[0, -1] + 1) % vocab
        device = next(self.hf.parameters()).device
        first = self.hf(input_ids=ids.to(device)).logits[0, 0]
        second = self.hf(input_ids=changed.to(device)).logits[0, 0]
        self.hf.train(was_training)
        return bool(torch.allclose(first, second, atol=1e-5))

    def forward(
        self, inputs: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.hf(input_ids=inputs).logits
        picked = logits.flatten(0, 1).index_select(0, positions)
        return F.cross_entropy(picked.float(), targets), picked

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def text_to_text_hf_batch(
    sources: list[list[int]], targets: list[list[int]], special: dict, encoder_decoder: bool
) -> dict[str, torch.Tensor]:
    """One training batch for :class:`HFTextToText`. Encoder-decoder: ``source [EOS]`` in,
    ``target [EOS]`` as labels (-100 on padding). Causal: lmforge's prefix-LM framing
    (``[BOS] source [EOS] target [EOS]``, labels shifted, loss on the target only)."""
    if not encoder_decoder:
        from lmforge.data.prefix_lm import text_to_text_batch

        frame = {**special, "cls": special["cls"] if special.get("cls") is not None else special["sep"]}
        batch = text_to_text_batch(sources, targets, special=frame)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "prefix_mask": batch.prefix_mask,
            "labels": batch.labels,
        }
    eos, pad = special["sep"], special["pad"]
    inputs = [[*s, eos] for s in sources]
    outputs = [[*t, eos] for t in targets]
    width_in, width_out = max(map(len, inputs)), max(map(len, outputs))
    input_ids = torch.full((len(inputs), width_in), pad, dtype=torch.long)
    attention_mask = torch.zeros(len(inputs), width_in, dtype=torch.bool)
    labels = torch.full((len(inputs), width_out), IGNORE_INDEX, dtype=torch.long)
    for row, (source, target) in enumerate(zip(inputs, outputs, strict=True)):
        input_ids[row, : len(source)] = torch.as_tensor(source)
        attention_mask[row, : len(source)] = True
        labels[row, : len(target)] = torch.as_tensor(target)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "prefix_mask": attention_mask,
        "labels": labels,
    }
