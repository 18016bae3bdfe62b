"""Sequence classification finetuning as a LightningModule, scored with torchmetrics."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lmforge.core.config import OptimConfig
from lmforge.lit.optim import configure, scheduled_steps
from lmforge.models.transformer import TransformerConfig, build_classifier


def classification_metrics(num_classes: int) -> MetricCollection:
    """Accuracy and macro precision/recall/F1: the figures every stage reports."""
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


class LitClassifier(L.LightningModule):
    def __init__(
        self,
        model_cfg: TransformerConfig,
        *,
        num_labels: int,
        pooling: str,
        optim: OptimConfig,
        total_steps: int,
        model: torch.nn.Module | None = None,
        word_vectors: tuple[int, int] | None = None,
        ensemble: int = 1,
        ngram_buckets: int = 0,
        encoder_len: int | None = None,
        sep_id: int | None = None,
    ) -> None:
        super().__init__()
        # `model`: a pretrained classifier with the same call (model=hf), else lmforge's own:
        # one classifier, or an ensemble of `ensemble` (finetune.ensemble) trained side by side.
        self.model = model or build_classifier(
            model_cfg,
            num_labels=num_labels,
            pooling=pooling,
            word_vectors=word_vectors,
            ensemble=ensemble,
            ngram_buckets=ngram_buckets,
            encoder_len=encoder_len,
            sep_id=sep_id,
        )
        self.optim = optim
        self.total_steps = total_steps
        self.val_metrics = classification_metrics(num_labels).clone(prefix="val/")
        # Weighted by batch size and summed across DDP ranks: the mean over the split's examples.
        self.val_loss = MeanMetric()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if hasattr(self.model, "member_logits"):
            # An ensemble's members each learn alone (the mean of their losses), so they stay
            # diverse; validation and prediction score their averaged probabilities.
            logits = self.model.member_logits(batch["input_ids"], batch["attention_mask"])
            labels = batch["labels"].repeat(len(logits))
            loss = F.cross_entropy(logits.flatten(0, 1), labels)
        else:
            logits = self.model(batch["input_ids"], batch["attention_mask"])
            loss = F.cross_entropy(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["input_ids"], batch["attention_mask"])
        self.val_loss.update(F.cross_entropy(logits, batch["labels"]), weight=len(batch["labels"]))
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.val_metrics.update(logits, batch["labels"])
        self.log_dict(self.val_metrics, prog_bar=False)

    def configure_optimizers(self) -> dict:
        return configure(self.model, self.optim, scheduled_steps(self, self.total_steps))
