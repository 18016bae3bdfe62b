"""ELECTRA replaced-token detection (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators") in plain PyTorch, on top of :mod:`.transformer`.

A small generator (a :class:`~lmforge.models.transformer.MaskedLM` with fewer layers) fills the
masked positions with samples from its own predictions; the discriminator (the encoder that is
kept and finetuned) learns, at **every** position, whether the token it sees is the original.
Masked LM learns from the ~15% of positions it masks; replaced-token detection learns from all of
them, which is why it is far more sample-efficient for small models on small budgets.

The generator shares the token and position embeddings with the discriminator (the paper's
"tied embeddings"), and its MLM decoder is tied to them too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.transformer import INIT_STD, Encoder, MaskedLM, TransformerConfig

__all__ = ["Electra", "ElectraOutput", "electra_flops_per_token", "generator_config"]


def generator_config(cfg: TransformerConfig, layers: int) -> TransformerConfig:
    """The generator: the discriminator's width (so embeddings can be shared), ``layers`` deep."""
    if layers < 1:
        raise ValueError(f"the ELECTRA generator needs at least one layer, got {layers}")
    return replace(cfg, n_layers=layers)


class ElectraOutput(NamedTuple):
    loss: torch.Tensor  # generator MLM loss + disc_weight * discriminator BCE
    mlm_loss: torch.Tensor
    disc_loss: torch.Tensor
    mlm_logits: torch.Tensor  # [N, V] at the masked positions
    disc_accuracy: torch.Tensor  # share of positions the discriminator labels right
    replaced_fraction: torch.Tensor  # share of positions that hold a replaced token


class Electra(nn.Module):
    """Generator + discriminator. ``self.encoder`` is the discriminator's encoder: the part that
    is saved and finetuned, under the same state-dict keys as a masked-LM encoder."""

    def __init__(self, cfg: TransformerConfig, generator_layers: int = 1, disc_weight: float = 50.0) -> None:
        super().__init__()
        if disc_weight <= 0:
            raise ValueError(f"disc_weight must be positive, got {disc_weight}")
        self.cfg = cfg
        self.disc_weight = disc_weight
        self.encoder = Encoder(cfg)
        self.generator = MaskedLM(generator_config(cfg, generator_layers))
        # Tie: one token and one position embedding for both networks (and the generator's
        # decoder, which MaskedLM ties to its token embedding).
        self.generator.encoder.tok_emb = self.encoder.tok_emb
        self.generator.encoder.pos_emb = self.encoder.pos_emb
        self.generator.decoder.weight = self.encoder.tok_emb.weight
        self.disc_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.disc_out = nn.Linear(cfg.d_model, 1)
        for layer in (self.disc_dense, self.disc_out):
            nn.init.normal_(layer.weight, mean=0.0, std=INIT_STD)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        targets: torch.Tensor,
        original_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ElectraOutput:
        """``input_ids``: the masked batch [B, T]; ``positions``/``targets``: flat masked
        positions and their original ids (as from :func:`lmforge.data.masking.mask_tokens`);
        ``original_ids``: the unmasked batch; ``generator``: RNG for sampling replacements."""
        mlm_loss, mlm_logits = self.generator(input_ids, positions, targets, attention_mask)
        with torch.no_grad():
            probs = torch.softmax(mlm_logits.detach().float(), dim=-1)
            sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            corrupted = original_ids.reshape(-1).clone()
            corrupted[positions] = sampled
            corrupted = corrupted.view_as(original_ids)
            # A sample equal to the original counts as original (as in the paper).
            replaced = (corrupted != original_ids).float()
        hidden = self.encoder(corrupted, attention_mask)
        logits = self.disc_out(F.gelu(self.disc_dense(hidden))).squeeze(-1)
        if attention_mask is not None:  # score real tokens only
            real = attention_mask.to(torch.bool)
            logits, replaced = logits[real], replaced[real]
        disc_loss = F.binary_cross_entropy_with_logits(logits, replaced)
        correct = ((logits > 0).float() == replaced).float().mean()
        replaced_fraction = replaced.mean()
        loss = mlm_loss + self.disc_weight * disc_loss
        return ElectraOutput(loss, mlm_loss, disc_loss, mlm_logits, correct, replaced_fraction)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (shared embeddings counted once)."""
        n = sum(p.numel() for p in self.parameters())  # parameters() already de-duplicates
        if exclude_embeddings:
            n -= self.encoder.tok_emb.weight.numel() + self.encoder.pos_emb.weight.numel()
        return n


def electra_flops_per_token(
    cfg: TransformerConfig, generator_layers: int, seq_len: int, masked_fraction: float
) -> float:
    """Training FLOPs per input token: the discriminator at every position (body and its
    D x D + D x 1 head) plus the generator (body at every position, MLM head at the masked ones)."""
    from lmforge.models.transformer import training_flops_per_token

    disc = training_flops_per_token(cfg, seq_len, 0.0) + 6.0 * (cfg.d_model * cfg.d_model + cfg.d_model)
    gen = training_flops_per_token(generator_config(cfg, generator_layers), seq_len, masked_fraction)
    return disc + gen
