"""Token tagging head in plain PyTorch: encoder, dropout and a linear layer at every position.

The caller reads the logits at each word's first subword (:mod:`lmforge.data.tagging`). Optional
word features (hashed prefixes, suffixes and shape of each word, see
:func:`lmforge.data.tagging.word_feature_ids`) are embedded in a table of ``feature_buckets``
rows, summed, projected to the model width and added to the input embedding of the word's first
subword, so the encoder sees them in context. They carry what a subword vocabulary trained on
one treebank misses for unseen words: ``-ly``, ``-ing``, capitals, digits.

An optional character CNN (``char_cnn`` filters; Ma & Hovy 2016, the character half of the
word+char BiLSTM taggers) reads each word's characters (the feature columns after the hashed ones):
embeddings, a width-3 convolution and a max over the characters, projected and added to the
first subword's embedding like the hashed features. It sees every character of an unseen word in
order, where the hashed features see fixed affixes only.

An optional bidirectional LSTM (``context_lstm`` units each way) reads the encoder's output before
the head: the word-order bias of the word+char BiLSTM taggers, which a Transformer trained from
scratch on one treebank learns slowly (its tags depend mostly on the neighbouring words). It runs
over every subword (``context_over="subwords"``) or over the words only (``"words"``: each word's
first-subword state, so one step is one word whatever its length, as in the word-level taggers).
Word starts are where the features are non-zero (every word has hashed ids > 0 there).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmforge.data.tagging import CHAR_SLOTS, FEATURE_NAMES, HASHED_FEATURES
from lmforge.models.transformer import INIT_STD, Dropout, Encoder, TransformerConfig
from lmforge.models.word_vectors import WordVectors

FEATURE_DIM = 64
# Characters are folded into this many embedding rows (code point modulo; 0 is padding): every
# ASCII and Latin-1 character has its own row, rarer scripts share.
CHAR_BUCKETS = 1024
CHAR_DIM = 32
CONTEXT_OVER = ("subwords", "words")


class TokenTagger(nn.Module):
    def __init__(
        self,
        cfg: TransformerConfig,
        num_tags: int,
        feature_buckets: int = 0,
        context_lstm: int = 0,
        char_cnn: int = 0,
        context_over: str = "subwords",
        word_vectors: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 2:
            raise ValueError(f"TokenTagger needs at least 2 tags, got {num_tags}")
        if context_lstm < 0:
            raise ValueError("TokenTagger: context_lstm must be 0 (off) or a positive width")
        if char_cnn < 0:
            raise ValueError("TokenTagger: char_cnn must be 0 (off) or a positive number of filters")
        if context_over not in CONTEXT_OVER:
            raise ValueError(f"TokenTagger: context_over must be one of {CONTEXT_OVER}, got {context_over!r}")
        self.cfg = cfg
        self.num_tags = num_tags
        self.feature_buckets = feature_buckets
        self.context_lstm = context_lstm
        self.char_cnn = char_cnn
        self.context_over = context_over
        self.encoder = Encoder(cfg)
        self.dropout = Dropout(cfg.dropout, fast=cfg.fast_dropout)
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
        self.word_vectors = word_vectors
        if word_vectors:
            self.vectors = WordVectors(*word_vectors)
            self.vector_proj = nn.Linear(word_vectors[1], cfg.d_model, bias=False)
            nn.init.normal_(self.vector_proj.weight, mean=0.0, std=INIT_STD)
        if char_cnn:
            self.char_embed = nn.Embedding(CHAR_BUCKETS, CHAR_DIM, padding_idx=0)
            self.char_conv = nn.Conv1d(CHAR_DIM, char_cnn, kernel_size=3, padding=1)
            self.char_proj = nn.Linear(char_cnn, cfg.d_model, bias=False)
            nn.init.normal_(self.char_proj.weight, mean=0.0, std=INIT_STD)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids`` long [B, T]; ``features`` long [B, T, F] of word features (hashed ids,
        then characters; 0 = none); returns tag logits [B, T, num_tags] at every position."""
        extra = None
        if self.feature_buckets and features is not None:
            hashed = features[..., : len(HASHED_FEATURES)]
            rows = torch.where(hashed > 0, hashed % (self.feature_buckets - 1) + 1, 0)
            extra = self.feature_proj(self.features(rows).sum(dim=-2))
        if self.word_vectors and features is not None:
            if features.shape[-1] < len(FEATURE_NAMES):
                raise ValueError(
                    "TokenTagger: word vectors need each word's key in the features; these shards "
                    "predate it: re-run the tokenize stage"
                )
            vectors = self.vector_proj(self.vectors(features[..., len(FEATURE_NAMES) - 1]))
            extra = vectors if extra is None else extra + vectors
        if self.char_cnn and features is not None:
            chars = self._chars(features[..., len(HASHED_FEATURES) : len(HASHED_FEATURES) + CHAR_SLOTS])
            extra = chars if extra is None else extra + chars
        hidden = self.encoder(input_ids, attention_mask, extra_embeddings=extra)
        if self.context_lstm and self.context_over == "words":
            if features is None:
                raise ValueError("TokenTagger: a word-level BiLSTM needs the word features (word starts)")
            hidden = self._word_context(self.dropout(hidden), features[..., 0] > 0)
        elif self.context_lstm:
            hidden = self._context(self.dropout(hidden), attention_mask)
        return self.head(self.dropout(hidden))

    def set_word_vectors(self, keys: torch.Tensor, table: torch.Tensor) -> None:
        self.vectors.set(keys, table)

    def _chars(self, chars: torch.Tensor) -> torch.Tensor:
        """[B, T, C] characters (0 = none) -> [B, T, d_model]: the max over each word's
        characters of a width-3 convolution; zeros where there is no word."""
        if chars.shape[-1] == 0:
            raise ValueError(
                "TokenTagger: task.char_cnn needs the words' characters in the features; "
                "these shards predate them: re-run the tokenize stage"
            )
        batch, length, slots = chars.shape
        flat = chars.reshape(-1, slots)
        # Only the positions that hold a word (first subwords), and only as many character
        # slots as the batch's longest word fills: most positions are later subwords or
        # padding, most words are short.
        words = (flat[:, 0] > 0).nonzero().squeeze(1)
        used = int((flat[words] > 0).sum(dim=1).max()) if len(words) else 1
        rows = flat[words, :used]
        present = rows > 0
        rows = torch.where(present, rows % (CHAR_BUCKETS - 1) + 1, 0)
        conv = self.char_conv(self.char_embed(rows).transpose(1, 2))  # [words, filters, used]
        pooled = torch.relu(conv.masked_fill(~present[:, None, :], float("-inf")).amax(dim=-1))
        out = torch.zeros(batch * length, self.cfg.d_model, dtype=pooled.dtype, device=pooled.device)
        out = out.index_copy(0, words, self.char_proj(pooled))
        return out.reshape(batch, length, -1)

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

    def _word_context(self, hidden: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over each row's words (their first subwords' states, in order) only; the
        other positions come out as zeros."""
        batch, length, width = hidden.shape
        counts = starts.sum(dim=1)
        longest = max(int(counts.max()), 1) if batch else 1
        rank = starts.long().cumsum(dim=1) - 1  # word j of a row goes to slot j
        rows = torch.arange(batch, device=hidden.device)[:, None].expand_as(starts)
        words = hidden.new_zeros(batch, longest, width)
        words[rows[starts], rank[starts]] = hidden[starts]
        packed = pack_padded_sequence(
            words, counts.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.context(packed)
        out = pad_packed_sequence(out, batch_first=True, total_length=longest)[0]
        result = hidden.new_zeros(batch, length, out.shape[-1])
        result[starts] = out[rows[starts], rank[starts]]
        return result


def tagger_from_config(config: dict) -> TokenTagger:
    """An untrained :class:`TokenTagger` shaped as a finetuned folder's ``config.json`` says."""
    return TokenTagger(
        TransformerConfig(**config["model"]),
        len(config["tags"]),
        config.get("feature_buckets", 0),
        config.get("context_lstm", 0),
        config.get("char_cnn", 0),
        config.get("context_over", "subwords"),
        tuple(config["word_vectors"]) if config.get("word_vectors") else None,
    )
