"""Tests for lmforge.models.transformer and lmforge.data.masking (tiny sizes, CPU, fast)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge.data.masking import mask_tokens
from lmforge.models.transformer import (
    MaskedLM,
    SequenceClassifier,
    TransformerConfig,
    measure_matmul_peak_flops,
    training_flops_per_token,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP)


def tiny_cfg(**overrides: object) -> TransformerConfig:
    kwargs: dict[str, object] = dict(
        vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=24, dropout=0.1
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)  # type: ignore[arg-type]


# --- naive reference: explicit maths in float64, reading the model's own weights ----------------


def ref_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def ref_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_encoder(
    sd: dict[str, torch.Tensor],
    cfg: TransformerConfig,
    ids: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    b, t = ids.shape
    h, hd, eps = cfg.n_heads, cfg.head_dim, cfg.norm_eps
    x = sd["tok_emb.weight"][ids] + sd["pos_emb.weight"][:t]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        y = ref_layer_norm(x, sd[p + "ln1.weight"], sd[p + "ln1.bias"], eps)
        wq, wk, wv = sd[p + "attn.qkv.weight"].chunk(3, dim=0)
        bq, bk, bv = sd[p + "attn.qkv.bias"].chunk(3, dim=0)

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, h, hd).transpose(1, 2)

        q, k, v = heads(y @ wq.T + bq), heads(y @ wk.T + bk), heads(y @ wv.T + bv)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        att = torch.exp(scores - scores.amax(-1, keepdim=True))
        att = att / att.sum(-1, keepdim=True)
        y = (att @ v).transpose(1, 2).reshape(b, t, cfg.d_model)
        x = x + y @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = ref_layer_norm(x, sd[p + "ln2.weight"], sd[p + "ln2.bias"], eps)
        y = ref_gelu(y @ sd[p + "mlp.fc.weight"].T + sd[p + "mlp.fc.bias"])
        x = x + y @ sd[p + "mlp.proj.weight"].T + sd[p + "mlp.proj.bias"]
    return ref_layer_norm(x, sd["ln_f.weight"], sd["ln_f.bias"], eps)


def float64_state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {
        k[len(prefix) :]: v.detach().double() for k, v in module.state_dict().items() if k.startswith(prefix)
    }


def ref_mlm_loss(
    model: MaskedLM,
    ids: torch.Tensor,
    positions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-vocabulary logits at every position, then pick the masked ones."""
    cfg = model.cfg
    sd = float64_state(model)
    hidden = ref_encoder(float64_state(model, "encoder."), cfg, ids, mask)
    y = ref_gelu(hidden @ sd["head_dense.weight"].T + sd["head_dense.bias"])
    y = ref_layer_norm(y, sd["head_norm.weight"], sd["head_norm.bias"], cfg.norm_eps)
    logits = y @ sd["encoder.tok_emb.weight"].T + sd["decoder.bias"]  # [B, T, V]
    logits = logits.view(-1, cfg.vocab_size)[positions]
    log_z = torch.logsumexp(logits, dim=-1)
    return (log_z - logits.gather(1, targets[:, None]).squeeze(1)).mean()


def randomise_(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial biases and LayerNorm affine params, which the init leaves at 0/1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


# --- model vs reference ------------------------------------------------------------------------


@pytest.mark.parametrize("padded", [False, True])
def test_masked_lm_loss_matches_naive_reference(padded: bool) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = MaskedLM(cfg).eval()
    randomise_(model, 1)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(4, cfg.vocab_size, (3, 20), generator=g)
    mask = None
    if padded:
        ids[1, 12:] = PAD
        ids[2, 5:] = PAD
        mask = ids != PAD
    inp, positions, targets = mask_tokens(
        ids,
        mask_rate=0.3,
        mask_id=MASK,
        vocab_size=cfg.vocab_size,
        special_ids=SPECIALS,
        generator=g,
    )
    with torch.no_grad():
        loss, logits = model(inp, positions, targets, attention_mask=mask)
    expected = ref_mlm_loss(model, inp, positions, targets, mask)
    assert logits.shape == (positions.numel(), cfg.vocab_size)
    assert abs(loss.item() - expected.item()) < 1e-5, (loss.item(), expected.item())
    assert loss.item() > 1.0  # a random model must not be accidentally near-perfect


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_matches_reference_and_ignores_padding(pooling: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = SequenceClassifier(cfg, num_labels=3, pooling=pooling).eval()  # type: ignore[arg-type]
    randomise_(model, 3)
    g = torch.Generator().manual_seed(4)
    lengths = [20, 7, 13]
    ids = torch.full((3, 20), PAD, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(4, cfg.vocab_size, (n,), generator=g)
    mask = ids != PAD
    with torch.no_grad():
        logits = model(ids, mask)

    # Reference with an explicit masked softmax and explicit pooling.
    hidden = ref_encoder(float64_state(model, "encoder."), cfg, ids, mask)
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        m = mask[..., None].double()
        pooled = (hidden * m).sum(1) / m.sum(1)
    sd = float64_state(model)
    expected = pooled @ sd["classifier.weight"].T + sd["classifier.bias"]
    torch.testing.assert_close(logits.double(), expected, atol=1e-5, rtol=0)

    with torch.no_grad():
        # Each row alone and unpadded gives the same logits as inside the padded batch ...
        for row, n in enumerate(lengths):
            alone = model(ids[row : row + 1, :n], torch.ones(1, n, dtype=torch.bool))
            torch.testing.assert_close(alone[0], logits[row], atol=1e-5, rtol=0)
        # ... and appending more pads (mask derived from pad_id) changes nothing either.
        more = torch.cat([ids, torch.full((3, 4), PAD, dtype=torch.long)], dim=1)
        torch.testing.assert_close(model(more), logits, atol=1e-5, rtol=0)
    # The padding really is hidden: garbage in padded slots must not matter.
    noisy = torch.where(mask, ids, torch.randint(4, cfg.vocab_size, ids.shape, generator=g))
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, mask), logits, atol=1e-5, rtol=0)


# --- structure, gradients, training ------------------------------------------------------------


def test_decoder_weight_is_tied_to_token_embedding() -> None:
    model = MaskedLM(tiny_cfg())
    emb, dec = model.encoder.tok_emb.weight, model.decoder.weight
    assert dec is emb
    assert dec.data_ptr() == emb.data_ptr()
    with torch.no_grad():
        emb[5, 0] = 123.0
    assert dec[5, 0].item() == 123.0
    # Counted once: unique parameters, not the sum over modules.
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))
    assert model.num_parameters() < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def test_init_scales_residual_projections() -> None:
    cfg = tiny_cfg(d_model=128, n_heads=4, d_ff=256, n_layers=8)
    enc = MaskedLM(cfg).encoder
    assert enc.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    scaled = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert enc.blocks[0].attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert enc.blocks[0].mlp.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert torch.all(enc.blocks[0].mlp.fc.bias == 0)
    assert torch.all(enc.ln_f.weight == 1)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = MaskedLM(cfg).train()
    ids = torch.randint(4, cfg.vocab_size, (4, 16))
    inp, positions, targets = mask_tokens(
        ids, mask_rate=0.5, mask_id=MASK, vocab_size=cfg.vocab_size, special_ids=SPECIALS
    )
    loss, _ = model(inp, positions, targets)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_masked_lm_learns_a_repeated_pattern() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(vocab_size=16, d_model=32, n_heads=2, d_ff=64, max_len=16, dropout=0.0)
    model = MaskedLM(cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    # Every row is 4..11 twice: a masked token is fully determined by its position and its
    # neighbours, so a working model drives the loss from ~log(16) to near zero.
    ids = (4 + torch.arange(16) % 8).repeat(8, 1)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        inp, positions, targets = mask_tokens(
            ids,
            mask_rate=0.15,
            mask_id=MASK,
            vocab_size=cfg.vocab_size,
            special_ids=SPECIALS,
            generator=g,
        )
        loss, _ = model(inp, positions, targets)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(loss.item())
    last = sum(losses[-20:]) / 20
    assert losses[0] > 2.0, losses[0]
    assert last < 0.1, (losses[0], last)


# --- config, FLOPs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible by n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"pad_id": 50}, "pad_id"),
        ({"norm_eps": 0.0}, "norm_eps"),
    ],
)
def test_config_rejects_invalid_values(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        tiny_cfg(**overrides)


def test_too_long_sequence_is_rejected() -> None:
    model = MaskedLM(tiny_cfg(max_len=8))
    with pytest.raises(ValueError, match="max_len"):
        model.encoder(torch.zeros(1, 9, dtype=torch.long))


def test_training_flops_per_token() -> None:
    cfg = TransformerConfig(vocab_size=1000, d_model=64, n_layers=2, n_heads=2, d_ff=256)
    body = 2 * (4 * 64 * 64 + 2 * 64 * 256)
    head = 64 * 64 + 64 * 1000
    expected = 6 * body + 12 * 2 * 32 * 64 + 0.25 * 6 * head
    assert training_flops_per_token(cfg, seq_len=32, masked_fraction=0.25) == expected
    # The body's matmul weights are exactly the non-embedding, non-head Linear weights.
    model = MaskedLM(cfg)
    linear_weights = sum(
        m.weight.numel() for m in model.encoder.blocks.modules() if isinstance(m, torch.nn.Linear)
    )
    assert linear_weights == body


def test_measure_matmul_peak_flops_is_plausible() -> None:
    peak = measure_matmul_peak_flops(n=128, seconds=0.05)
    assert 1e7 < peak < 1e15


# --- masking -----------------------------------------------------------------------------------


def _batch_with_specials(b: int, t: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (b, t), generator=g)
    ids[:, 0] = CLS
    lengths = torch.randint(t // 2, t, (b,), generator=g)
    ar = torch.arange(t)[None, :]
    ids[ar == lengths[:, None]] = SEP
    ids[ar > lengths[:, None]] = PAD
    return ids


def test_mask_tokens_rate_and_80_10_10_split() -> None:
    vocab = 1000
    ids = _batch_with_specials(256, 128, vocab, seed=0)
    g = torch.Generator().manual_seed(1)
    inp, positions, targets = mask_tokens(
        ids, mask_rate=0.15, mask_id=MASK, vocab_size=vocab, special_ids=SPECIALS, generator=g
    )
    flat_ids, flat_inp = ids.view(-1), inp.view(-1)
    candidates = int((ids > SEP).sum())
    assert positions.numel() / candidates == pytest.approx(0.15, abs=0.005)
    assert torch.equal(targets, flat_ids[positions])
    assert torch.all(positions[1:] > positions[:-1])  # sorted and unique

    at = flat_inp[positions]
    n = positions.numel()
    masked = (at == MASK).sum().item() / n
    kept = (at == targets).sum().item() / n
    randomised = ((at != MASK) & (at != targets)).sum().item() / n
    assert masked == pytest.approx(0.8, abs=0.015)
    assert kept == pytest.approx(0.1, abs=0.01)
    assert randomised == pytest.approx(0.1, abs=0.01)
    # Random replacements come from the ordinary vocabulary only.
    assert not torch.isin(at[at != MASK], torch.tensor(SPECIALS)).any()
    # Unselected positions are untouched.
    untouched = torch.ones_like(flat_ids, dtype=torch.bool)
    untouched[positions] = False
    assert torch.equal(flat_inp[untouched], flat_ids[untouched])


def test_mask_tokens_never_selects_special_tokens() -> None:
    vocab = 20
    ids = _batch_with_specials(64, 32, vocab, seed=2)
    ids[5, 3:7] = MASK  # a literal [MASK] in the data must not be selected either
    _, positions, targets = mask_tokens(
        ids, mask_rate=1.0, mask_id=MASK, vocab_size=vocab, special_ids=SPECIALS
    )
    assert not torch.isin(targets, torch.tensor([*SPECIALS, MASK])).any()
    assert positions.numel() == int((ids > MASK).sum())  # rate 1 selects every ordinary token


def test_mask_tokens_is_deterministic_given_generator() -> None:
    ids = _batch_with_specials(8, 32, 100, seed=3)
    kwargs = dict(mask_rate=0.2, mask_id=MASK, vocab_size=100, special_ids=SPECIALS)
    a = mask_tokens(ids, **kwargs, generator=torch.Generator().manual_seed(7))  # type: ignore[arg-type]
    b = mask_tokens(ids, **kwargs, generator=torch.Generator().manual_seed(7))  # type: ignore[arg-type]
    c = mask_tokens(ids, **kwargs, generator=torch.Generator().manual_seed(8))  # type: ignore[arg-type]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[1], c[1]) or not torch.equal(a[0], c[0])


def test_mask_tokens_selects_at_least_one_position() -> None:
    ids = torch.tensor([[CLS, 10, 11, SEP, PAD]])
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        _, positions, targets = mask_tokens(
            ids, mask_rate=1e-6, mask_id=MASK, vocab_size=20, special_ids=SPECIALS, generator=g
        )
        assert positions.numel() == 1
        assert positions.item() in (1, 2)
        assert targets.item() == ids.view(-1)[positions].item()
    with pytest.raises(ValueError, match="only special"):
        mask_tokens(
            torch.tensor([[CLS, SEP, PAD]]),
            mask_rate=0.5,
            mask_id=MASK,
            vocab_size=20,
            special_ids=SPECIALS,
        )


# --- dependency hygiene ------------------------------------------------------------------------


def test_models_do_not_import_training_frameworks() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    pythonpath = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    code = (
        "import lmforge.models.transformer, sys; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} "
        "& {'lightning', 'hydra', 'mlflow', 'pytorch_lightning'}); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
