"""The tagger's optional BiLSTM context (over subwords or words), character CNN and word dropout
(``task.context_lstm``, ``task.context_over``, ``task.char_cnn``, ``task.word_dropout``): padding
never changes a sentence's tags, a word-level BiLSTM steps over first subwords only, the CNN reads
a word's characters only, and dropout touches only text."""

from __future__ import annotations

import torch

from lmforge.core.config import OptimConfig
from lmforge.data.tagging import CHAR_SLOTS, FEATURE_NAMES, HASHED_FEATURES, word_chars, word_feature_ids
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


def test_word_level_bilstm_steps_over_words_only() -> None:
    torch.manual_seed(0)
    model = TokenTagger(CFG, num_tags=5, feature_buckets=64, context_lstm=6, context_over="words").eval()
    # Sentence 1: [CLS] w1 (3 subwords) w2 (1) [SEP]; sentence 2: [CLS] w1 (1) w2 (1) w3 (2) [SEP].
    short = torch.tensor([[2, 10, 11, 12, 13, 3]])
    short_features = features_of([None, "unbelievable", None, None, "cats", None])
    long = torch.tensor([[2, 20, 21, 22, 23, 3]])
    long_features = features_of([None, "the", "dog", "barks", None, None])
    batch = torch.zeros(2, 6, dtype=torch.long)
    batch[0], batch[1] = short[0], long[0]
    features = torch.cat([short_features, long_features])
    with torch.no_grad():
        alone = model(short, torch.ones_like(short, dtype=torch.bool), short_features)
        together = model(batch, batch != 0, features)
        torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)
        # The BiLSTM sees a word's first subword only: changing a later subword of "unbelievable"
        # leaves the word's BiLSTM input and so its logits as they were.
        inner = short.clone()
        inner[0, 2] = 30
        hidden = model.encoder(inner, torch.ones_like(inner, dtype=torch.bool))
        assert hidden.shape[1] == 6
        states = model._word_context(hidden, short_features[..., 0] > 0)
        assert states[0, [0, 2, 3, 5]].abs().max() == 0 and states[0, [1, 4]].abs().min() > 0
        # Two words in, two LSTM steps: the same as running the LSTM on those two states alone.
        direct = model.context(hidden[:, [1, 4]])[0]
        torch.testing.assert_close(states[:, [1, 4]], direct, atol=1e-5, rtol=1e-5)
    try:
        TokenTagger(CFG, num_tags=5, context_lstm=6, context_over="sentences")
    except ValueError as error:
        assert "context_over" in str(error)
    else:
        raise AssertionError("an unknown context_over must fail")


def test_word_chars_keep_a_long_words_stem_and_ending() -> None:
    assert word_chars("Cat") == [ord("C") + 1, ord("a") + 1, ord("t") + 1] + [0] * (CHAR_SLOTS - 3)
    long = "internationalisations"  # 21 characters: the first 8 and the last 8 are kept
    assert word_chars(long) == [ord(c) + 1 for c in "internatisations"]
    assert len(word_feature_ids("Cat")) == len(FEATURE_NAMES) == len(HASHED_FEATURES) + CHAR_SLOTS + 1
    assert word_feature_ids("Cat")[-1] == word_feature_ids("CAT")[-1] != word_feature_ids("Cats")[-1]


def features_of(words: list[str | None]) -> torch.Tensor:
    """[1, T, F] features as TaggedWindows lays them out: a word's at its first subword, 0 elsewhere."""
    rows = [word_feature_ids(w) if w else [0] * len(FEATURE_NAMES) for w in words]
    return torch.tensor([rows])


def test_char_cnn_reads_the_characters_and_ignores_positions_without_a_word() -> None:
    torch.manual_seed(0)
    model = TokenTagger(CFG, num_tags=4, feature_buckets=64, char_cnn=8).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    base = features_of([None, "overheated", None, "Paris", None])
    with torch.no_grad():
        embedded = model._chars(base[..., len(HASHED_FEATURES) :])
        assert embedded[0, [0, 2, 4]].abs().max() == 0 and embedded[0, 1].abs().max() > 0
        # The same hashed features (same affixes and shape), other inner characters: the CNN
        # alone tells the two words apart.
        other = base.clone()
        other[0, 1] = torch.tensor(word_feature_ids("overseated"))
        assert torch.equal(other[0, 1, : len(HASHED_FEATURES)], base[0, 1, : len(HASHED_FEATURES)])
        assert not torch.allclose(model(ids, mask, base)[0, 1], model(ids, mask, other)[0, 1])
        no_cnn = TokenTagger(CFG, num_tags=4, feature_buckets=64)
        no_cnn.load_state_dict(model.state_dict(), strict=False)
        no_cnn.eval()
        torch.testing.assert_close(no_cnn(ids, mask, base)[0, 1], no_cnn(ids, mask, other)[0, 1])
        # Shards written before the characters existed hold the hashed columns only.
        try:
            model(ids, mask, base[..., : len(HASHED_FEATURES)])
        except ValueError as error:
            assert "re-run the tokenize stage" in str(error)
        else:
            raise AssertionError("a char CNN over shards without characters must fail clearly")


def test_a_saved_config_rebuilds_the_same_shape_of_tagger() -> None:
    config = {
        "model": CFG.__dict__,
        "tags": ["A", "B", "C"],
        "feature_buckets": 64,
        "context_lstm": 4,
        "char_cnn": 8,
        "context_over": "words",
    }
    model = tagger_from_config(config)
    assert (model.num_tags, model.feature_buckets, model.context_lstm, model.char_cnn) == (3, 64, 4, 8)
    assert model.context_over == "words"
    # Folders saved before the BiLSTM, the CNN and word-level context existed have no such keys.
    older = tagger_from_config(
        {k: v for k, v in config.items() if k not in ("context_lstm", "char_cnn", "context_over")}
    )
    assert (older.context_lstm, older.char_cnn, older.context_over) == (0, 0, "subwords")


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
