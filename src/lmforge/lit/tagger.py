"""Token tagging finetuning as a LightningModule: cross-entropy at each word's first subword
(-100 elsewhere), validation accuracy and macro precision/recall/F1 per word with torchmetrics."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from lmforge.core.config import OptimConfig
from lmforge.data.tagging import IGNORE
from lmforge.lit.classifier import classification_metrics
from lmforge.lit.optim import configure, scheduled_steps
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
        context_lstm: int = 0,
        char_cnn: int = 0,
        word_dropout: float = 0.0,
        context_over: str = "subwords",
        word_vectors: tuple[int, int] | None = None,
        special_ids: dict[str, int] | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        # `model`: a pretrained token classifier with the same call (model=hf), else lmforge's own.
        self.model = model or TokenTagger(
            model_cfg, num_tags, feature_buckets, context_lstm, char_cnn, context_over, word_vectors
        )
        self.word_dropout = word_dropout
        self.special_ids = special_ids or {}
        if word_dropout and not {"unk", "cls", "sep"} <= self.special_ids.keys():
            raise ValueError("LitTagger: word_dropout needs the unk, cls and sep token ids")
        self.num_tags = num_tags
        self.optim = optim
        self.total_steps = total_steps
        self.val_metrics = classification_metrics(num_tags).clone(prefix="val/")

    def _logits(self, batch: dict, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        ids = batch["input_ids"] if input_ids is None else input_ids
        return self.model(ids, batch["attention_mask"], batch["features"])

    def _dropped_words(self, batch: dict) -> torch.Tensor:
        """The batch's subword ids with each text subword replaced by [UNK] with probability
        ``word_dropout``: the tagger must then tag from context and the word's features, as it
        must for words never seen in training (their features are kept)."""
        ids = batch["input_ids"]
        special = self.special_ids
        text = batch["attention_mask"].bool() & (ids != special["cls"]) & (ids != special["sep"])
        drop = text & (torch.rand(ids.shape, device=ids.device) < self.word_dropout)
        return torch.where(drop, torch.full_like(ids, special["unk"]), ids)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch, self._dropped_words(batch) if self.word_dropout else None)
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
            sync_dist=True,
        )
        self.val_metrics.update(logits[scored], targets[scored])
        self.log_dict(self.val_metrics, prog_bar=False)

    def configure_optimizers(self) -> dict:
        return configure(self.model, self.optim, scheduled_steps(self, self.total_steps))
