"""Masked-language-model pretraining as a LightningModule."""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from lmforge.config import OptimConfig
from lmforge.data.masking import mask_tokens
from lmforge.lit.optim import configure
from lmforge.models.transformer import MaskedLM, TransformerConfig, training_flops_per_token


class LitMaskedLM(L.LightningModule):
    """BERT-style MLM. Masks are drawn inside the step from a generator seeded by
    ``(seed, step)``, so a resumed run sees exactly the masks an uninterrupted one would."""

    def __init__(self, model_cfg: TransformerConfig, *, mask_rate: float, special_ids: dict,
                 optim: OptimConfig, total_steps: int, seed: int = 0,
                 peak_flops: float | None = None) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.model = MaskedLM(model_cfg)
        self.mask_rate = mask_rate
        self.special_ids = special_ids
        self.optim = optim
        self.total_steps = total_steps
        self.seed = seed
        self.peak_flops = peak_flops
        self._tick: float | None = None

    def _mask(self, batch: torch.Tensor, salt: int):
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + salt)
        inputs, positions, targets = mask_tokens(
            batch.cpu(), mask_rate=self.mask_rate, mask_id=self.special_ids["mask"],
            vocab_size=self.model_cfg.vocab_size, special_ids=list(self.special_ids.values()),
            generator=generator)
        return inputs.to(self.device), positions.to(self.device), targets.to(self.device)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        inputs, positions, targets = self._mask(batch, self.global_step)
        loss, _ = self.model(inputs, positions, targets)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/perplexity", torch.exp(loss.detach().clamp(max=20)))
        self._log_throughput(batch)
        return loss

    def _log_throughput(self, batch: torch.Tensor) -> None:
        now = time.perf_counter()
        if self._tick is not None:
            tokens_per_s = batch.numel() / (now - self._tick)
            self.log("perf/tokens_per_s", tokens_per_s, prog_bar=True)
            if self.peak_flops:
                flops = training_flops_per_token(self.model_cfg, batch.shape[1], self.mask_rate)
                self.log("perf/mfu", tokens_per_s * flops / self.peak_flops)
        self._tick = now

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Fixed masks per validation batch: evaluations at different steps compare like for like.
        inputs, positions, targets = self._mask(batch, 10**9 + batch_idx)
        loss, logits = self.model(inputs, positions, targets)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/perplexity", math.exp(min(loss.item(), 20)))
        self.log("val/mlm_accuracy", accuracy)

    def on_validation_epoch_start(self) -> None:
        self._tick = None

    def configure_optimizers(self) -> dict:
        return configure(self.model, self.optim, self.total_steps)
