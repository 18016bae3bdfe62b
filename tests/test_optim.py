"""AdamW parameter groups: weight decay on matrices only, and layer-wise learning-rate decay."""

from __future__ import annotations

import pytest
import torch

from lmforge.lit.optim import configure, layer_depth, param_groups
from lmforge.models.transformer import SequenceClassifier, TransformerConfig

CFG = TransformerConfig(vocab_size=100, d_model=16, n_layers=3, n_heads=2, d_ff=32, max_len=16)


def lr_of(groups: list[dict], model: torch.nn.Module) -> dict[str, float]:
    where = {id(p): g for g in groups for p in g["params"]}
    return {name: where[id(p)]["lr"] for name, p in model.named_parameters()}


def test_layer_decay_scales_each_layer_from_the_head_down() -> None:
    model = SequenceClassifier(CFG, num_labels=2)
    lrs = lr_of(param_groups(model, 0.01, lr=1e-3, layer_decay=0.5), model)
    assert lrs["classifier.weight"] == lrs["encoder.ln_f.weight"] == pytest.approx(1e-3)
    for i in range(3):  # block i of 3 sits 3 - i layers below the top, every parameter alike
        block = {lr for name, lr in lrs.items() if name.startswith(f"encoder.blocks.{i}.")}
        assert len(block) == 1 and block.pop() == pytest.approx(1e-3 * 0.5 ** (3 - i))
    assert lrs["encoder.tok_emb.weight"] == lrs["encoder.pos_emb.weight"] == pytest.approx(1e-3 * 0.5**4)


def test_weight_decay_stays_on_matrices_with_or_without_layer_decay() -> None:
    model = SequenceClassifier(CFG, num_labels=2)
    for groups in (param_groups(model, 0.01), param_groups(model, 0.01, lr=1e-3, layer_decay=0.8)):
        where = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
        for name, param in model.named_parameters():
            no_decay = param.ndim < 2 or "emb" in name or "norm" in name or name.endswith("bias")
            assert where[id(param)] == (0.0 if no_decay else 0.01), name
    # Off: the two groups of old, every parameter once, no per-group lr.
    plain = param_groups(model, 0.01)
    assert len(plain) == 2 and all("lr" not in g for g in plain)
    assert sum(len(g["params"]) for g in plain) == len(list(model.parameters()))


def test_the_schedule_keeps_each_layers_ratio() -> None:
    from lmforge.core.config import OptimConfig

    model = SequenceClassifier(CFG, num_labels=2)
    optim = configure(model, OptimConfig(lr=1e-3, warmup_ratio=0.1, layer_decay=0.5), total_steps=100)
    optimizer, schedule = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    for _ in range(30):
        optimizer.step()
        schedule.step()
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert len(lrs) == 5 and all(b / a == pytest.approx(2.0) for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 1e-3  # decaying


def test_layer_depth_reads_block_numbers() -> None:
    assert layer_depth("encoder.tok_emb.weight", 4) == 0
    assert layer_depth("encoder.blocks.0.attn.qkv.weight", 4) == 1
    assert layer_depth("encoder.blocks.11.attn.qkv.weight", 12) == 12
    assert layer_depth("classifier.bias", 4) == 5


def test_layer_decay_is_checked_and_kept_to_finetuning() -> None:
    from lmforge.core.config import OptimConfig
    from lmforge.core.errors import UserError

    OptimConfig(layer_decay=0.8).check("optim")
    with pytest.raises(UserError, match=r"'optim.layer_decay': must be in \(0, 1\]"):
        OptimConfig(layer_decay=0.0).check("optim")
    with pytest.raises(UserError, match="'pretrain.optim.layer_decay': layer-wise decay is for finetuning"):
        OptimConfig(layer_decay=0.8).check("pretrain.optim")
