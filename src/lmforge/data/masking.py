"""Pretraining targets: BERT-style dynamic masking (masked LM), and next-token targets (causal LM)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["mask_tokens", "next_token_targets"]

# Of the selected positions: this share becomes [MASK], the next share a random token, the rest
# stays unchanged (Devlin et al. 2019, section 3.1). The unchanged/random shares stop the model
# from learning that only [MASK] positions need a good representation.
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_rate: float,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Select ~``mask_rate`` of the non-special tokens of ``ids`` (long [B, T]) for prediction.

    Returns ``(input_ids, positions, targets)``:

    - ``input_ids`` long [B, T]: a copy of ``ids`` where, of the selected positions, 80% hold
      ``mask_id``, 10% a random non-special token and 10% their original token;
    - ``positions`` long [N]: flat row-major indices (``b * T + t``) of the selected positions,
      the format :meth:`lmforge.models.transformer.MaskedLM.forward` expects;
    - ``targets`` long [N]: the original tokens at ``positions``.

    Tokens in ``special_ids`` (pad, cls, sep, ...) and ``mask_id`` itself are never selected
    and never drawn as random replacements. At least one position is always selected, so the
    loss is defined even for a tiny batch. Deterministic given ``generator``'s state.
    """
    if ids.dim() != 2:
        raise ValueError(f"ids must be 2-D [batch, seq_len], got shape {tuple(ids.shape)}")
    if not 0.0 < mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in (0, 1], got {mask_rate}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is outside the vocabulary [0, {vocab_size})")
    device = ids.device
    ids = ids.to(torch.long)

    special = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    special[torch.as_tensor([*special_ids, mask_id], dtype=torch.long, device=device)] = True
    replacement_pool = (~special).nonzero().squeeze(1)
    if replacement_pool.numel() == 0:
        raise ValueError("every vocabulary id is special; nothing can be used as a replacement")

    candidate = ~special[ids]
    if not bool(candidate.any()):
        raise ValueError("the batch contains only special tokens; there is nothing to mask")

    select_draw = torch.rand(ids.shape, generator=generator, device=device)
    selected = (select_draw < mask_rate) & candidate
    # Force-selecting the candidate with the smallest draw guarantees one masked position. It
    # changes nothing when anything was selected already: that candidate is then selected too.
    first = select_draw.masked_fill(~candidate, 2.0).view(-1).argmin()
    selected.view(-1)[first] = True

    action_draw = torch.rand(ids.shape, generator=generator, device=device)
    to_mask = selected & (action_draw < MASK_SHARE)
    to_random = selected & (action_draw >= MASK_SHARE) & (action_draw < MASK_SHARE + RANDOM_SHARE)
    random_tokens = replacement_pool[
        torch.randint(replacement_pool.numel(), ids.shape, generator=generator, device=device)
    ]

    input_ids = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    input_ids = torch.where(to_random, random_tokens, input_ids)
    positions = selected.view(-1).nonzero().squeeze(1)
    targets = ids.reshape(-1).index_select(0, positions)
    return input_ids, positions, targets


def next_token_targets(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal-LM targets in :func:`mask_tokens`' layout, so one LM head serves both objectives.

    Returns ``(inputs, positions, targets)``: the batch unchanged, the flat indices
    (``b * T + t``) of every position but each row's last, and the token that follows each.
    """
    b, t = batch.shape
    positions = (
        torch.arange(b, device=batch.device)[:, None] * t + torch.arange(t - 1, device=batch.device)[None, :]
    ).reshape(-1)
    return batch, positions, batch[:, 1:].reshape(-1).long()
