"""The tagger's optional BiLSTM context and word dropout (``task.context_lstm``,
``task.word_dropout``): padding never changes a sentence's tags, and dropout touches only text."""

from __future__ import annotations

import torch

from lmforge.config import OptimConfig
from lmforge.lit.tagger import LitTagger
from lmforge.models.tagger import TokenTagger, tagger_from_config
from lmforge.models.transformer import TransformerConfig

CFG = TransformerConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=32, dropout=0.0)
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_bilstm_context_gives_a_sentence_the_same_logits_alone_or_padded_in_a_batch() -> None:
    torch.manual_seed(0)
    model = TokenTagger(CFG, num_tags=5, feature_buckets=0, context_lstm=6).eval()
    short = torch.tensor([[2, 10, 11, 12, 3]])
    long = torch.tensor([[2, 20, 21, 22, 23, 24, 25, 3]])
    batch = torch.zeros(2, 8, dtype=torch.long)
    batch[0, :5], batch[1] = short[0], long[0]
    mask = batch != 0
    with torch.no_grad():
        alone = model(short, torch.ones_like(short, dtype=torch.bool))
        together = model(batch, mask)
    assert together.shape == (2, 8, 5)
    torch.testing.assert_close(together[0, :5], alone[0], atol=1e-5, rtol=1e-5)
    # Without the BiLSTM the head reads the encoder directly: a different model, other logits.
    plain = TokenTagger(CFG, num_tags=5)
    assert not hasattr(plain, "context") and plain.head.in_features == CFG.d_model
    assert model.head.in_features == 12


def test_a_saved_config_rebuilds_the_same_shape_of_tagger() -> None:
    config = {"model": CFG.__dict__, "tags": ["A", "B", "C"], "feature_buckets": 64, "context_lstm": 4}
    model = tagger_from_config(config)
    assert (model.num_tags, model.feature_buckets, model.context_lstm) == (3, 64, 4)
    # Folders saved before the BiLSTM existed have no context_lstm key: none.
    assert tagger_from_config({k: v for k, v in config.items() if k != "context_lstm"}).context_lstm == 0


def test_word_dropout_replaces_only_text_subwords_by_unk_at_its_rate() -> None:
    module = LitTagger(
        CFG,
        num_tags=3,
        feature_buckets=0,
        optim=OptimConfig(),
        total_steps=10,
        word_dropout=0.3,
        special_ids=SPECIAL,
    )
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (64, 40))
    ids[:, 0], ids[:, 30], ids[:, 31:] = SPECIAL["cls"], SPECIAL["sep"], SPECIAL["pad"]
    batch = {"input_ids": ids, "attention_mask": ids != SPECIAL["pad"]}
    dropped = module._dropped_words(batch)
    changed = dropped != ids
    assert (dropped[changed] == SPECIAL["unk"]).all()
    assert not changed[:, 0].any() and not changed[:, 30:].any()
    rate = changed[:, 1:30].float().mean().item()
    assert 0.25 < rate < 0.35, rate
