"""Token tagging finetuning as a LightningModule: cross-entropy at each word's first subword
(-100 elsewhere), validation accuracy and macro precision/recall/F1 per word with torchmetrics."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from lmforge.config import OptimConfig
from lmforge.data.tagging import IGNORE
from lmforge.lit.classifier import classification_metrics
from lmforge.lit.optim import configure
from lmforge.models.tagger import TokenTagger
from lmforge.models.transformer import TransformerConfig


def word_targets(batch: dict, num_tags: int) -> torch.Tensor:
    """The batch's tags with tags the model cannot predict (absent from train) ignored too."""
    tags = batch["tags"]
    return torch.where(tags >= num_tags, IGNORE, tags)


class LitTagger(L.LightningModule):
    def __init__(
        self,
        model_cfg: TransformerConfig,
        *,
        num_tags: int,
        feature_buckets: int,
        optim: OptimConfig,
        total_steps: int,
        model: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        # `model`: a pretrained token classifier with the same call (model=hf), else lmforge's own.
        self.model = model or TokenTagger(model_cfg, num_tags, feature_buckets)
        self.num_tags = num_tags
        self.optim = optim
        self.total_steps = total_steps
        self.val_metrics = classification_metrics(num_tags).clone(prefix="val/")

    def _logits(self, batch: dict) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"], batch["features"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch)
        loss = F.cross_entropy(
            logits.flatten(0, 1), word_targets(batch, self.num_tags).flatten(), ignore_index=IGNORE
        )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self._logits(batch)
        targets = word_targets(batch, self.num_tags)
        scored = targets != IGNORE
        self.log(
            "val/loss",
            F.cross_entropy(logits[scored], targets[scored]),
            prog_bar=True,
            batch_size=int(scored.sum()),
        )
        self.val_metrics.update(logits[scored], targets[scored])
        self.log_dict(self.val_metrics, prog_bar=False)

    def configure_optimizers(self) -> dict:
        return configure(self.model, self.optim, self.total_steps)
