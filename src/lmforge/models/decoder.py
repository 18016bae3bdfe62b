"""A decoder-only language model with prefix-LM attention and a KV cache, in plain PyTorch.

:class:`PrefixLM` is :class:`~lmforge.models.transformer.MaskedLM`'s network run as a causal LM
with the MLM head applied at every position: the same parameter names, so a causal-LM
pretrained checkpoint (``pretrain=clm``) loads into it unchanged, LM head included::

    from lmforge.models.decoder import PrefixLM
    model = PrefixLM(cfg)
    model.load_state_dict(masked_lm.state_dict())  # or PrefixLM.from_masked_lm(masked_lm)

Prefix-LM attention (Raffel et al. 2020, section 3.2.1; Zhang et al. 2022, arXiv 2202.00528): the
prefix (a text-to-text source, framed ``[CLS] source [SEP]``) is attended bidirectionally, the
rest causally. A key is visible to a query when it is a real token and either lies at or before
the query, or both lie in the prefix. ``prefix_mask=None`` gives a plain causal LM.

The text-to-text loss (:meth:`PrefixLM.target_loss`) and the per-row target log-likelihood
(:meth:`PrefixLM.target_log_likelihood`) take the batch built by
:func:`lmforge.data.prefix_lm.text_to_text_batch`. Decoding is in :mod:`lmforge.models.generation`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.transformer import (
    INIT_STD,
    Encoder,
    KVCache,
    MaskedLM,
    TransformerConfig,
)

__all__ = ["IGNORE_INDEX", "PrefixLM", "prefix_lm_mask"]

# Label of positions without a loss target (what F.cross_entropy ignores by default).
IGNORE_INDEX = -100


def prefix_lm_mask(
    attention_mask: torch.Tensor | None,
    prefix_mask: torch.Tensor | None,
    query_len: int,
    past_len: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """The visibility mask of ``query_len`` new queries over ``past_len + query_len`` keys.

    ``attention_mask`` and ``prefix_mask``: bool [B, past_len + query_len] over every key column
    (True = real token / token in the prefix), or None (no padding / no prefix). Returns bool
    [B or 1, 1, query_len, past_len + query_len] (True = may attend), or None when plain causal
    attention needs no explicit mask (SDPA's ``is_causal``, or a single query that may see every
    key). Query ``i`` sits at column ``past_len + i``. Each query may always see itself, so a
    padding query is never left with no key at all (which would make SDPA return NaN, and a NaN
    value would leak into real rows through a zero attention weight in the next layer).
    """
    n_keys = past_len + query_len
    if attention_mask is None and prefix_mask is None and (past_len == 0 or query_len == 1):
        return None
    if attention_mask is not None:
        device = attention_mask.device
    elif prefix_mask is not None:
        device = prefix_mask.device
    query_col = torch.arange(past_len, n_keys, device=device)[:, None]
    key_col = torch.arange(n_keys, device=device)[None, :]
    causal = key_col <= query_col  # [Tq, Tk]
    visible = causal[None]  # [1, Tq, Tk]
    if prefix_mask is not None:
        prefix = prefix_mask.to(torch.bool)
        both_in_prefix = prefix[:, past_len:, None] & prefix[:, None, :]
        visible = visible | both_in_prefix
    if attention_mask is not None:
        visible = visible & attention_mask.to(torch.bool)[:, None, :]
        visible = visible | (key_col == query_col)[None]
    return visible[:, None]


class PrefixLM(nn.Module):
    """:class:`MaskedLM`'s encoder and LM head as a (prefix-)causal LM with logits everywhere.

    Parameter names equal ``MaskedLM``'s (``encoder.*``, ``head_dense``, ``head_norm``,
    ``decoder``, the decoder weight tied to ``encoder.tok_emb``). ``cfg.causal`` is forced on:
    attention is never bidirectional beyond the prefix.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        cfg = replace(cfg, causal=True)
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.head_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.head_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.decoder.weight = self.encoder.tok_emb.weight
        nn.init.normal_(self.head_dense.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.head_dense.bias)
        nn.init.zeros_(self.decoder.bias)

    @classmethod
    def from_masked_lm(cls, masked_lm: MaskedLM) -> PrefixLM:
        """A PrefixLM with ``masked_lm``'s weights (copied; strict load)."""
        model = cls(masked_lm.cfg)
        model.load_state_dict(masked_lm.state_dict())
        return model

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        """An empty KV cache for ``batch_size`` rows of up to ``capacity`` columns, on the
        model's device and in its dtype."""
        weight = self.encoder.tok_emb.weight
        return KVCache(self.cfg, batch_size, capacity, device=weight.device, dtype=weight.dtype)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final hidden states [B, T, D]; arguments as in :meth:`forward`."""
        past = 0 if cache is None else cache.length
        t = input_ids.shape[1]
        key_mask = prefix_lm_mask(attention_mask, prefix_mask, t, past, input_ids.device)
        if position_ids is None and attention_mask is not None and past == 0:
            # Right padding needs nothing (real tokens come first); left padding needs each
            # row's positions to start at its first real token. Both stay below T.
            if t > self.cfg.max_len:
                raise ValueError(
                    f"sequence length {t} exceeds TransformerConfig.max_len="
                    f"{self.cfg.max_len}; truncate the input or raise max_len"
                )
            position_ids = _positions_from_mask(attention_mask)
        elif position_ids is not None and t > 1:
            # Not checked for single-token steps: that would cost a device sync per token, and
            # generation keeps its positions in range itself.
            top = int(position_ids.max())
            if top >= self.cfg.max_len:
                raise ValueError(
                    f"position {top} exceeds TransformerConfig.max_len="
                    f"{self.cfg.max_len}; truncate the input or raise max_len"
                )
        return self.encoder(input_ids, key_mask=key_mask, position_ids=position_ids, cache=cache)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of hidden states [..., D] -> [..., V] (MaskedLM's head)."""
        return self.decoder(self.head_norm(F.gelu(self.head_dense(hidden))))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Next-token logits [B, T, V] (or [B, logits_to_keep, V]).

        - ``input_ids``: long [B, T], the new tokens (after any cached ones).
        - ``attention_mask``: bool [B, K] with ``K = cache.length + T`` (every key column,
          cached ones included, as in Hugging Face), True = real token; None = no padding.
          Left or right padding both work.
        - ``prefix_mask``: bool [B, K], True = token of the bidirectional prefix; None = causal.
        - ``position_ids``: long [B, T]; None = derived: from ``attention_mask`` (positions
          count real tokens only, so a left-padded row gets the same positions as unpadded)
          when there is no cache yet, else ``cache.length + arange(T)``. Pass them explicitly
          for left-padded rows once a cache holds their prompt.
        - ``cache``: a :class:`KVCache` from :meth:`new_cache`; it is extended by T columns.
        - ``logits_to_keep``: if > 0, the head runs on the last that many positions only (a
          decoding prefill needs just the last one).
        """
        hidden = self.hidden_states(input_ids, attention_mask, prefix_mask, position_ids, cache)
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        return self.lm_head(hidden)

    def _target_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_mask: torch.Tensor | None,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if labels.shape != input_ids.shape:
            raise ValueError(
                f"labels must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(labels.shape)}"
            )
        hidden = self.hidden_states(input_ids, attention_mask, prefix_mask)
        positions = (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)
        # The head (and its V-wide softmax) runs on target positions only, as MaskedLM's does
        # on masked ones: the source is context, never scored.
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        return self.lm_head(selected), labels.reshape(-1).index_select(0, positions), positions

    def target_loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_mask: torch.Tensor | None,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over target positions.

        ``labels``: long [B, T], the token that *follows* each position (already shifted, as
        :func:`lmforge.data.prefix_lm.text_to_text_batch` builds them), -100 where nothing is
        scored. Returns ``(loss, logits [N, V], targets [N])`` over the N scored positions.
        """
        logits, targets, _ = self._target_logits(input_ids, attention_mask, prefix_mask, labels)
        return F.cross_entropy(logits.float(), targets), logits, targets

    def target_log_likelihood(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prefix_mask: torch.Tensor | None,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the summed log-probability of its targets (float [B]) and their count
        (long [B]); perplexity over a set is ``exp(-sum(log_likelihood) / sum(count))``."""
        logits, targets, positions = self._target_logits(input_ids, attention_mask, prefix_mask, labels)
        token_ll = -F.cross_entropy(logits.float(), targets, reduction="none")
        rows = positions // labels.shape[1]
        b = labels.shape[0]
        log_likelihood = torch.zeros(b, device=token_ll.device).index_add_(0, rows, token_ll)
        counts = torch.zeros(b, dtype=torch.long, device=rows.device).index_add_(
            0, rows, torch.ones_like(rows)
        )
        return log_likelihood, counts

    def num_parameters(self) -> int:
        """Unique parameters (the tied decoder weight is counted once)."""
        return sum(p.numel() for p in self.parameters())


def _positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only: 0 at each row's first real token. Padding before
    it gets 0 too (any valid position does: padding is never attended by real tokens)."""
    return (attention_mask.to(torch.long).cumsum(1) - 1).clamp(min=0)
