"""Token tagging head in plain PyTorch: encoder, dropout and a linear layer at every position.

The caller reads the logits at each word's first subword (:mod:`lmforge.data.tagging`). Optional
word features (hashed prefixes, suffixes and shape of each word, see
:func:`lmforge.data.tagging.word_feature_ids`) are embedded in a table of ``feature_buckets``
rows, summed, projected to the model width and added to the input embedding of the word's first
subword, so the encoder sees them in context. They carry what a subword vocabulary trained on
one treebank misses for unseen words: ``-ly``, ``-ing``, capitals, digits.

An optional bidirectional LSTM (``context_lstm`` units each way) reads the encoder's output before
the head: the word-order bias of the word+char BiLSTM taggers, which a Transformer trained from
scratch on one treebank learns slowly (its tags depend mostly on the neighbouring words).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmforge.models.transformer import INIT_STD, Encoder, TransformerConfig

FEATURE_DIM = 64


class TokenTagger(nn.Module):
    def __init__(
        self, cfg: TransformerConfig, num_tags: int, feature_buckets: int = 0, context_lstm: int = 0
    ) -> None:
        super().__init__()
        if num_tags < 2:
            raise ValueError(f"TokenTagger needs at least 2 tags, got {num_tags}")
        if context_lstm < 0:
            raise ValueError("TokenTagger: context_lstm must be 0 (off) or a positive width")
        self.cfg = cfg
        self.num_tags = num_tags
        self.feature_buckets = feature_buckets
        self.context_lstm = context_lstm
        self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        width = cfg.d_model
        if context_lstm:
            self.context = nn.LSTM(cfg.d_model, context_lstm, batch_first=True, bidirectional=True)
            width = 2 * context_lstm
        self.head = nn.Linear(width, num_tags)
        nn.init.normal_(self.head.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.head.bias)
        if feature_buckets:
            if feature_buckets < 2:
                raise ValueError("TokenTagger: feature_buckets must be 0 (off) or at least 2")
            self.features = nn.Embedding(feature_buckets, FEATURE_DIM, padding_idx=0)
            self.feature_proj = nn.Linear(FEATURE_DIM, cfg.d_model, bias=False)
            nn.init.normal_(self.features.weight, mean=0.0, std=INIT_STD)
            with torch.no_grad():
                self.features.weight[0].zero_()
            nn.init.normal_(self.feature_proj.weight, mean=0.0, std=INIT_STD)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids`` long [B, T]; ``features`` long [B, T, F] of hashed feature ids (0 = none);
        returns tag logits [B, T, num_tags] at every position."""
        extra = None
        if self.feature_buckets and features is not None:
            rows = torch.where(features > 0, features % (self.feature_buckets - 1) + 1, 0)
            extra = self.feature_proj(self.features(rows).sum(dim=-2))
        hidden = self.encoder(input_ids, attention_mask, extra_embeddings=extra)
        if self.context_lstm:
            hidden = self._context(self.dropout(hidden), attention_mask)
        return self.head(self.dropout(hidden))

    def _context(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The BiLSTM over each row's real positions only (padding never reaches the backward
        direction); padded positions come out as zeros."""
        batch, length = hidden.shape[:2]
        if attention_mask is None:
            return self.context(hidden)[0]
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.context(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=length)[0]


def tagger_from_config(config: dict) -> TokenTagger:
    """An untrained :class:`TokenTagger` shaped as a finetuned folder's ``config.json`` says."""
    return TokenTagger(
        TransformerConfig(**config["model"]),
        len(config["tags"]),
        config.get("feature_buckets", 0),
        config.get("context_lstm", 0),
    )
