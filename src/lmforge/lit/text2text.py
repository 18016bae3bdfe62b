"""Text-to-text finetuning (translation, summarization) as a LightningModule.

A decoder-only prefix LM (:class:`lmforge.models.decoder.PrefixLM`) reads ``[CLS] source [SEP]``
with bidirectional attention over the source and learns ``target [SEP]`` by next-token
prediction, the loss on target tokens only. Validation reports the target loss (it picks the
best checkpoint: cheap and teacher-forced, where BLEU would need decoding every check), its
perplexity and next-token accuracy over the whole split.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from lmforge.core.config import OptimConfig
from lmforge.lit.optim import configure, scheduled_steps
from lmforge.models.decoder import PrefixLM
from lmforge.models.transformer import TransformerConfig


class LitTextToText(L.LightningModule):
    def __init__(
        self,
        model_cfg: TransformerConfig,
        *,
        optim: OptimConfig,
        total_steps: int,
        prefix_lm: bool = True,
        model: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        # `model`: a pretrained text-to-text model with the same target_loss (model=hf).
        self.model = model or PrefixLM(model_cfg)
        self.optim = optim
        self.total_steps = total_steps
        self.prefix_lm = prefix_lm
        self._val = torch.zeros(3, dtype=torch.float64)  # summed loss, correct, scored tokens

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prefix = batch["prefix_mask"] if self.prefix_lm else None
        return self.model.target_loss(batch["input_ids"], batch["attention_mask"], prefix, batch["labels"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val.zero_()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, targets = self._loss(batch)
        n = targets.numel()
        correct = (logits.argmax(-1) == targets).sum()
        self._val += torch.tensor([float(loss) * n, float(correct), n], dtype=torch.float64)

    def on_validation_epoch_end(self) -> None:
        totals = self._val
        if self.trainer.world_size > 1:  # DDP: the sums over every rank's share of the split
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        total, correct, count = totals.tolist()
        if count == 0:
            return
        # Token-weighted over the whole split (a per-batch mean would weight short batches up).
        loss = total / count
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/perplexity", math.exp(min(loss, 20.0)))
        self.log("val/next_token_accuracy", correct / count)

    def configure_optimizers(self) -> dict:
        return configure(self.model, self.optim, scheduled_steps(self, self.total_steps))
