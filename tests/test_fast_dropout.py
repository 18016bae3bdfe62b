"""model.fast_dropout: packed dropout masks and the written-out attention that uses them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.core.config import ModelConfig
from lmforge.core.errors import UserError
from lmforge.models.transformer import (
    Dropout,
    MaskedLM,
    TransformerConfig,
    attention_with_dropout,
    packed_dropout,
)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_packed_dropout_keeps_the_right_share_and_rescales(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 1.0  # never 0, so a zero in the output is a dropped element
    y = packed_dropout(x, p)
    kept = y != 0
    n = x.numel()
    # Binomial(n, 1 - p): 5 standard deviations either side.
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # Each of the four 16-bit lanes of a 64-bit draw keeps the same share: none is biased.
    per_lane = kept.view(-1, 4).float().mean(0)
    assert torch.all((per_lane - (1 - p)).abs() < 5 * math.sqrt(p * (1 - p) / (n / 4))), per_lane


def test_packed_dropout_gradient_is_its_mask_and_the_seed_fixes_it() -> None:
    x = torch.randn(64, 33, requires_grad=True)  # 2,112 elements: not a multiple of 4 lanes
    torch.manual_seed(1)
    y = packed_dropout(x, 0.3)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)
    torch.manual_seed(1)
    again = packed_dropout(x, 0.3)
    assert torch.equal(again, y)
    assert not torch.equal(packed_dropout(x, 0.3), y)  # the stream moves on


def test_packed_dropout_is_the_identity_outside_training() -> None:
    x = torch.randn(8, 8)
    assert torch.equal(packed_dropout(x, 0.5, training=False), x)
    assert torch.equal(packed_dropout(x, 0.0), x)
    layer = Dropout(0.5, fast=True).eval()
    assert torch.equal(layer(x), x)
    assert "fast=True" in repr(layer)
    with pytest.raises(ValueError, match="dropout probability"):
        packed_dropout(x, 1.0)


@pytest.mark.parametrize("mask", ["none", "padding", "causal", "causal+padding"])
def test_written_out_attention_matches_sdpa(mask: str) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    key_mask = None
    if "padding" in mask:
        lengths = torch.tensor([7, 4, 1])
        key_mask = (torch.arange(7)[None, :] < lengths[:, None])[:, None, None, :]
    causal = "causal" in mask
    if causal and key_mask is not None:  # as Encoder builds it for padded causal batches
        key_mask = key_mask & torch.ones(7, 7, dtype=torch.bool).tril()
        causal = False
    ours = attention_with_dropout(q, k, v, key_mask, "causal" in mask and key_mask is None, 0.0)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=causal)
    torch.testing.assert_close(ours, reference)


def test_written_out_attention_keeps_fully_masked_rows_finite() -> None:
    q, k, v = (torch.randn(1, 1, 3, 4) for _ in range(3))
    none_visible = torch.zeros(1, 1, 1, 3, dtype=torch.bool)
    out = attention_with_dropout(q, k, v, none_visible, False, 0.5)
    assert torch.isfinite(out).all()


def test_fast_dropout_model_trains_and_scores_like_the_default() -> None:
    cfg = TransformerConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16)
    torch.manual_seed(0)
    default = MaskedLM(cfg)
    fast = MaskedLM(TransformerConfig(**{**cfg.__dict__, "fast_dropout": True}))
    fast.load_state_dict(default.state_dict())  # no new parameters or buffers
    ids = torch.randint(4, 40, (4, 16))
    positions = torch.arange(0, 64, 5)
    targets = ids.view(-1)[positions]
    # Scoring (eval mode) takes the same path: identical outputs.
    default.eval(), fast.eval()
    torch.testing.assert_close(fast(ids, positions, targets), default(ids, positions, targets))
    # Training: every dropout site uses packed masks, and every parameter gets a gradient.
    fast.train()
    assert all(m.fast for m in fast.modules() if isinstance(m, Dropout))
    torch.manual_seed(0)
    loss, _ = fast(ids, positions, targets)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fast.parameters())


def test_fast_dropout_config_is_for_lmforge_models_only() -> None:
    assert ModelConfig(fast_dropout=True).fast_dropout
    with pytest.raises(UserError, match="model.fast_dropout"):
        ModelConfig(name_or_path="bert-base-uncased", fast_dropout=True)


def test_throughput_benchmark_times_both_dropouts(tmp_path, monkeypatch) -> None:
    """bench/pretrain_throughput.py end to end on a tiny model (lmforge only: no transformers)."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "pretrain_throughput.py"
    spec = importlib.util.spec_from_file_location("bench_pretrain_throughput", script)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclass looks itself up there
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    out = tmp_path / "throughput.json"
    threads = torch.get_num_threads()
    try:
        code = bench.main(
            "--vocab 64 --width 32 --layers 1 --heads 2 --ffn 64 --seq 16 --batch 4 --rounds 2 "
            f"--steps 1 --warmup 1 --peak-seconds 0.05 --threads 1 --no-peer --json {out}".split()
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"lmforge MaskedLM", "lmforge fast dropout"}
    for r in results.values():
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and len(r["round_tokens_per_s"]) == 2
