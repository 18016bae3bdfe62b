"""Causal attention (``model.causal``) and the causal-LM objective (``pretrain.objective=clm``):
no position sees the future, the loss is next-token cross-entropy at every position, it learns,
and the pretrain stage picks it by config and hands finetuning a causal encoder."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.core.config import OptimConfig
from lmforge.models.transformer import Encoder, TransformerConfig

SPECIALS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def tiny_cfg(**overrides: object) -> TransformerConfig:
    kwargs: dict[str, object] = dict(
        vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=24, dropout=0.0
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)  # type: ignore[arg-type]


def test_a_causal_encoder_never_looks_ahead_and_a_bidirectional_one_does() -> None:
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (2, 12))
    later_changed = ids.clone()
    later_changed[:, 7:] = torch.randint(5, 40, (2, 5))
    causal = Encoder(tiny_cfg(causal=True)).eval()
    torch.testing.assert_close(causal(ids)[:, :7], causal(later_changed)[:, :7])
    assert not torch.allclose(causal(ids)[:, 7:], causal(later_changed)[:, 7:])

    bidirectional = Encoder(tiny_cfg()).eval()
    bidirectional.load_state_dict(causal.state_dict())  # same weights, only the attention differs
    assert not torch.allclose(bidirectional(ids)[:, :7], bidirectional(later_changed)[:, :7])


def test_causal_attention_with_a_padding_mask_matches_the_unpadded_rows() -> None:
    torch.manual_seed(0)
    encoder = Encoder(tiny_cfg(causal=True)).eval()
    short, long = torch.randint(5, 40, (1, 6)), torch.randint(5, 40, (1, 10))
    padded = torch.zeros(2, 10, dtype=torch.long)
    padded[0, :6], padded[1] = short, long
    mask = padded != 0
    out = encoder(padded, mask)
    torch.testing.assert_close(out[0, :6], encoder(short)[0])
    torch.testing.assert_close(out[1], encoder(long)[0])


def lit_clm(cfg: TransformerConfig, lr: float = 1e-3, steps: int = 100):
    from lmforge.lit.mlm import LitMaskedLM

    return LitMaskedLM(
        cfg,
        mask_rate=0.15,
        special_ids=SPECIALS,
        optim=OptimConfig(lr=lr, warmup_ratio=0.0),
        total_steps=steps,
        objective="clm",
    )


def test_clm_loss_is_next_token_cross_entropy_at_every_position() -> None:
    torch.manual_seed(0)
    module = lit_clm(tiny_cfg())  # bidirectional config: the objective makes it causal
    assert module.model_cfg.causal and module.model.encoder.blocks[0].attn.causal
    module.eval()
    batch = torch.randint(5, 40, (3, 10))
    loss, head_loss, accuracy, extra = module._forward(batch, salt=0)

    model = module.model
    hidden = model.encoder(batch)[:, :-1]
    logits = model.decoder(model.head_norm(F.gelu(model.head_dense(hidden))))
    reference = F.cross_entropy(logits.reshape(-1, 40), batch[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(head_loss, reference)
    expected_accuracy = (logits.argmax(-1) == batch[:, 1:]).float().mean()
    torch.testing.assert_close(accuracy, expected_accuracy)
    assert extra == {}
    assert module.accuracy_name == "next_token_accuracy"


def test_clm_learns_a_sequence_it_can_only_predict_from_the_left() -> None:
    """A repeating pattern whose next token follows from the current one: a causal LM drives
    the loss far below the uniform ln(40) ~ 3.7; unigram statistics alone cannot."""
    torch.manual_seed(0)
    module = lit_clm(tiny_cfg(vocab_size=16, max_len=16), lr=3e-3)
    optim = torch.optim.AdamW(module.model.parameters(), lr=3e-3, weight_decay=0.0)
    batch = (5 + torch.arange(16) % 8).repeat(8, 1)  # 8 tokens equally frequent
    first = None
    for _ in range(80):
        loss, *_ = module._forward(batch, salt=0)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        first = first if first is not None else loss.item()
    assert first > 2.0 and loss.item() < 0.2, (first, loss.item())


@pytest.mark.slow
@pytest.mark.ci
def test_pretrain_stage_runs_clm_by_config_and_finetune_loads_its_encoder(
    tiny_project: Path, tmp_path: Path, tiny_stage_config
) -> None:
    from lmforge import finetune, pretrain

    cfg = tiny_stage_config("pretrain=clm", "model.causal=true", "finetune.max_epochs=1")
    with contextlib.chdir(tiny_project):
        pretrain.run(cfg)
        metrics = json.loads((tmp_path / "metrics" / "pretrain.json").read_text())
        assert metrics["steps"] == cfg.pretrain.max_steps
        assert 0.0 <= metrics["val_next_token_accuracy"] <= 1.0 and "val_mlm_accuracy" not in metrics
        saved = json.loads((tmp_path / "pretrained" / "config.json").read_text())
        assert saved["causal"] is True
        finetune.run(cfg)
    finetuned = json.loads((tmp_path / "finetuned" / "config.json").read_text())
    assert finetuned["model"]["causal"] is True
    meta = json.loads((tmp_path / "finetuned" / "meta.json").read_text())
    assert meta["lmforge.pretrained"] == "true"  # started from encoder.pt (loaded strictly)
    assert meta["lmforge.pretrain_checkpoint"] == str(tmp_path / "pretrained" / "encoder.pt")
