"""Self-supervised pretraining as a LightningModule: masked LM (BERT), replaced-token
detection (ELECTRA) or next-token prediction (causal LM, GPT), chosen by ``pretrain.objective``."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import lightning as L
import torch

from lmforge.core.config import PRETRAIN_OBJECTIVES as OBJECTIVES
from lmforge.core.config import OptimConfig
from lmforge.data.masking import mask_tokens, next_token_targets
from lmforge.lit.optim import configure
from lmforge.models.electra import Electra, electra_flops_per_token
from lmforge.models.transformer import MaskedLM, TransformerConfig, training_flops_per_token


class LitMaskedLM(L.LightningModule):
    """BERT-style MLM; ELECTRA (``objective="electra"``: a ``generator_layers``-deep generator
    fills the masks, the encoder learns to spot replaced tokens at every position); or a causal
    LM (``objective="clm"``: the same head predicts the next token at every position, under
    causal attention whatever ``model_cfg.causal`` says, since with bidirectional attention
    the next token is in view). Masks and the generator's samples are drawn inside the step
    from generators seeded by ``(seed, step)``, so a resumed run sees exactly the masks an
    uninterrupted one would."""

    def __init__(
        self,
        model_cfg: TransformerConfig,
        *,
        mask_rate: float,
        special_ids: dict,
        optim: OptimConfig,
        total_steps: int,
        seed: int = 0,
        peak_flops: float | None = None,
        objective: str = "mlm",
        generator_layers: int = 1,
        disc_weight: float = 50.0,
        model: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.generator_layers = generator_layers  # ELECTRA only
        if objective == "clm":
            model_cfg = replace(model_cfg, causal=True)
        self.model_cfg = model_cfg
        if model is not None and objective == "electra":
            raise ValueError("a given model (model=hf) trains by mlm or clm, not electra")
        # `model`: a ready language model with MaskedLM's forward (model=hf's continued
        # pretraining, lmforge.models.hf.HFLanguageModel); model_cfg then gives the vocabulary.
        self.model = (
            model
            if model is not None
            else Electra(model_cfg, generator_layers, disc_weight)
            if objective == "electra"
            else MaskedLM(model_cfg)
        )
        # What the head's accuracy measures: masked tokens recovered, or next tokens predicted.
        self.accuracy_name = "next_token_accuracy" if objective == "clm" else "mlm_accuracy"
        self.mask_rate = mask_rate
        self.special_ids = special_ids
        self.optim = optim
        self.total_steps = total_steps
        self.seed = seed
        self.peak_flops = peak_flops
        self._tick: float | None = None

    def _mask(self, batch: torch.Tensor, salt: int):
        if self.objective == "clm":
            return tuple(t.to(self.device) for t in next_token_targets(batch))
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + salt)
        inputs, positions, targets = mask_tokens(
            batch.cpu(),
            mask_rate=self.mask_rate,
            mask_id=self.special_ids["mask"],
            vocab_size=self.model_cfg.vocab_size,
            special_ids=[i for i in self.special_ids.values() if i is not None],
            generator=generator,
        )
        return inputs.to(self.device), positions.to(self.device), targets.to(self.device)

    def _forward(
        self, batch: torch.Tensor, salt: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """``(loss, mlm_loss, mlm_accuracy, extra metrics)`` of one batch."""
        inputs, positions, targets = self._mask(batch, salt)
        if self.objective != "electra":
            loss, logits = self.model(inputs, positions, targets)
            extra = {}
            mlm_loss = loss
        else:
            sampler = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_033 + salt)
            out = self.model(inputs, positions, targets, batch.to(self.device, torch.long), generator=sampler)
            loss, mlm_loss, logits = out.loss, out.mlm_loss, out.mlm_logits
            extra = {
                "disc_loss": out.disc_loss,
                "disc_accuracy": out.disc_accuracy,
                "replaced_fraction": out.replaced_fraction,
            }
        accuracy = (logits.detach().argmax(-1) == targets).float().mean()
        return loss, mlm_loss, accuracy, extra

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, mlm_loss, _, extra = self._forward(batch, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/perplexity", torch.exp(mlm_loss.detach().clamp(max=20)))
        for name, value in extra.items():
            self.log(f"train/{name}", value)
        self._log_throughput(batch)
        return loss

    def _log_throughput(self, batch: torch.Tensor) -> None:
        now = time.perf_counter()
        if self._tick is not None:
            tokens_per_s = batch.numel() / (now - self._tick)
            self.log("perf/tokens_per_s", tokens_per_s, prog_bar=True)
            if self.peak_flops:
                flops = self.flops_per_token(batch.shape[1])
                self.log("perf/mfu", tokens_per_s * flops / self.peak_flops)
        self._tick = now

    def flops_per_token(self, seq_len: int) -> float:
        if self.objective == "electra":
            return electra_flops_per_token(self.model_cfg, self.generator_layers, seq_len, self.mask_rate)
        # clm: the head runs at every position but the last. Its attention is counted in full,
        # though half the scores are masked: MFU reads slightly high, more so at long sequences.
        head_fraction = (seq_len - 1) / seq_len if self.objective == "clm" else self.mask_rate
        return training_flops_per_token(self.model_cfg, seq_len, head_fraction)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Fixed masks (and samples) per validation batch: evaluations at different steps compare
        # like for like.
        loss, mlm_loss, accuracy, extra = self._forward(batch, 10**9 + batch_idx)
        # sync_dist: under DDP the mean of the ranks' means.
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/perplexity", math.exp(min(mlm_loss.item(), 20)), sync_dist=True)
        self.log(f"val/{self.accuracy_name}", accuracy, sync_dist=True)
        for name, value in extra.items():
            self.log(f"val/{name}", value, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._tick = None

    def configure_optimizers(self) -> dict:
        return configure(self.model, self.optim, self.total_steps)
