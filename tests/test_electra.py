"""ELECTRA replaced-token detection (lmforge.models.electra): maths against a plain reference,
tied embeddings, learning, and the pretrain stage choosing it by config."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.data.masking import mask_tokens
from lmforge.models.electra import Electra, electra_flops_per_token
from lmforge.models.transformer import TransformerConfig, training_flops_per_token

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP)


def tiny_cfg(**overrides: object) -> TransformerConfig:
    kwargs: dict[str, object] = dict(
        vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=24, dropout=0.0
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)  # type: ignore[arg-type]


def masked_batch(cfg: TransformerConfig, seed: int = 0, rows: int = 4, length: int = 16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, cfg.vocab_size, (rows, length), generator=g)
    ids[:, 0] = CLS
    inputs, positions, targets = mask_tokens(
        ids, mask_rate=0.3, mask_id=MASK, vocab_size=cfg.vocab_size, special_ids=SPECIALS, generator=g
    )
    return ids, inputs, positions, targets


def test_loss_is_generator_mlm_plus_weighted_detection_loss_on_the_sampled_corruption() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = Electra(cfg, generator_layers=1, disc_weight=50.0).eval()
    ids, inputs, positions, targets = masked_batch(cfg)
    out = model(inputs, positions, targets, ids, generator=torch.Generator().manual_seed(7))

    # Reference, step by step, from the model's own parts and the same sampling stream.
    mlm_loss, logits = model.generator(inputs, positions, targets)
    sampled = torch.multinomial(
        torch.softmax(logits.float(), -1), 1, generator=torch.Generator().manual_seed(7)
    ).squeeze(1)
    corrupted = ids.clone().view(-1)
    corrupted[positions] = sampled
    corrupted = corrupted.view_as(ids)
    replaced = (corrupted != ids).float()
    hidden = model.encoder(corrupted)
    disc_logits = model.disc_out(F.gelu(model.disc_dense(hidden))).squeeze(-1)
    disc_loss = F.binary_cross_entropy_with_logits(disc_logits, replaced)

    torch.testing.assert_close(out.mlm_loss, mlm_loss)
    torch.testing.assert_close(out.disc_loss, disc_loss)
    torch.testing.assert_close(out.loss, mlm_loss + 50.0 * disc_loss)
    torch.testing.assert_close(out.replaced_fraction, replaced.mean())
    # Only masked positions can be replaced, and an untrained generator replaces most of them.
    assert 0 < replaced.sum() <= len(positions)
    unmasked = torch.ones(ids.numel(), dtype=torch.bool)
    unmasked[positions] = False
    assert replaced.view(-1)[unmasked].sum() == 0


def test_generator_and_discriminator_share_one_embedding_table() -> None:
    model = Electra(tiny_cfg(), generator_layers=1)
    assert model.generator.encoder.tok_emb.weight is model.encoder.tok_emb.weight
    assert model.generator.decoder.weight is model.encoder.tok_emb.weight
    assert model.generator.encoder.pos_emb.weight is model.encoder.pos_emb.weight
    assert len(model.generator.encoder.blocks) == 1 and len(model.encoder.blocks) == 2
    # The saved encoder has the keys a masked-LM encoder has, so finetuning loads either.
    from lmforge.models.transformer import Encoder

    assert set(model.encoder.state_dict()) == set(Encoder(tiny_cfg()).state_dict())
    unique = {id(p) for p in model.parameters()}
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) and len(unique) == len(
        list(model.parameters())
    )


def test_discriminator_learns_to_spot_replacements() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(vocab_size=16, max_len=16)
    model = Electra(cfg, generator_layers=1, disc_weight=20.0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    ids = (4 + torch.arange(16) % 8).repeat(8, 1)  # a fixed pattern: replacements are visible
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(150):
        inputs, positions, targets = mask_tokens(
            ids, mask_rate=0.15, mask_id=MASK, vocab_size=cfg.vocab_size, special_ids=SPECIALS, generator=g
        )
        out = model(inputs, positions, targets, ids, generator=g)
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        optim.step()
        first = first if first is not None else (out.mlm_loss.item(), out.disc_loss.item())
    assert out.mlm_loss.item() < first[0] / 4, (first, out.mlm_loss.item())
    assert out.disc_loss.item() < first[1] / 2, (first, out.disc_loss.item())


def test_padded_positions_are_left_out_of_the_detection_loss() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = Electra(cfg).eval()
    ids, inputs, positions, targets = masked_batch(cfg, rows=2, length=12)
    mask = torch.ones_like(ids, dtype=torch.bool)
    out_full = model(
        inputs, positions, targets, ids, attention_mask=mask, generator=torch.Generator().manual_seed(1)
    )
    out_none = model(inputs, positions, targets, ids, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out_full.loss, out_none.loss)


def test_flops_count_both_networks() -> None:
    cfg = tiny_cfg(n_layers=4)
    one = electra_flops_per_token(cfg, 1, 16, 0.15)
    assert one > training_flops_per_token(cfg, 16, 0.0)
    assert electra_flops_per_token(cfg, 2, 16, 0.15) > one
