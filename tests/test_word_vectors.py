"""The word_vectors stage and the tagger's lookup: words used alike get alike vectors, the stage
writes what it says (or only its marker when off), refuses what it cannot do, and the tagger
finds each word's vector by its lower-cased form, through weight averaging and a save/load."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lmforge.config import VectorsConfig
from lmforge.errors import UserError
from lmforge.word_vectors import text_words, train_word_vectors

NOUNS = ["dog", "cat", "horse", "bird", "fish", "cow"]
VERBS = ["runs", "sleeps", "eats", "jumps", "sings", "waits"]
ADJS = ["big", "small", "red", "old", "happy", "lazy"]


def corpus(n: int = 3000, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = ["the", rng.choice(ADJS), rng.choice(NOUNS), rng.choice(VERBS)]
        if rng.random() < 0.5:
            words += ["near", "the", rng.choice(NOUNS)]
        out.append([*words, "."])
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_words_used_alike_get_alike_vectors() -> None:
    sentences = corpus()
    config = VectorsConfig(enabled=True, dim=4, contexts=50, window=2, min_count=1)
    vocab, vectors, stats = train_word_vectors(lambda: iter(sentences), config)
    assert sorted(vocab) == sorted({w for s in sentences for w in s})
    assert vectors.shape == (len(vocab), 4) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert stats["sentences"] == len(sentences) and stats["tokens"] == sum(map(len, sentences))
    row = {w: vectors[i] for i, w in enumerate(vocab)}
    same = [cosine(row[a], row[b]) for group in (NOUNS, VERBS, ADJS) for a in group for b in group if a < b]
    across = [cosine(row[a], row[b]) for a in NOUNS for b in VERBS + ADJS] + [
        cosine(row[a], row[b]) for a in VERBS for b in ADJS
    ]
    # Every pair within a class is closer than every pair across classes.
    assert min(same) > max(across), (min(same), max(across))


def test_rare_words_get_no_vector_and_too_few_words_are_refused() -> None:
    sentences = [*corpus(500), ["the", "zyzzyva", "sleeps", "."]]
    config = VectorsConfig(enabled=True, dim=4, contexts=50, min_count=2)
    vocab, _, _ = train_word_vectors(lambda: iter(sentences), config)
    assert "zyzzyva" not in vocab and "dog" in vocab
    # Capped at max_words, the most frequent first.
    capped, _, _ = train_word_vectors(lambda: iter(sentences), VectorsConfig(dim=4, max_words=6))
    assert capped[:2] == ["the", "."] and len(capped) == 6
    with pytest.raises(UserError, match="too few for vectors.dim=64"):
        train_word_vectors(lambda: iter(sentences), VectorsConfig(dim=64))


def test_running_text_is_split_as_treebanks_split_it() -> None:
    assert text_words("I don't like e-mail, it's 3.5 times worse!") == [
        "I", "do", "n't", "like", "e-mail", ",", "it", "'s", "3.5", "times", "worse", "!",
    ]  # fmt: skip


def test_the_stage_writes_vectors_or_only_its_marker(tmp_path) -> None:
    from lmforge import word_vectors
    from test_pipeline import tiny_config, working_dir

    prepared = tmp_path / "data/prepared"
    prepared.mkdir(parents=True)
    with open(prepared / "train.jsonl", "w") as handle:
        for words in corpus(400):
            handle.write(json.dumps({"text": " ".join(words), "words": words}) + "\n")
    off = tiny_config(tmp_path, "task=tagging")
    with working_dir(tmp_path):
        word_vectors.run(off)
        assert json.loads((tmp_path / "models/word_vectors/meta.json").read_text()) == {"enabled": False}
        with pytest.raises(UserError, match="run the word_vectors stage first"):
            word_vectors.load_word_vectors(tiny_config(tmp_path, "task=tagging", "vectors.enabled=true"))
        on = tiny_config(
            tmp_path, "task=tagging", "vectors.enabled=true", "vectors.dim=4", "vectors.contexts=30"
        )
        word_vectors.run(on)
        vocab, vectors = word_vectors.load_word_vectors(on)
    meta = json.loads((tmp_path / "models/word_vectors/meta.json").read_text())
    assert meta["enabled"] and meta["words"] == len(vocab) == len(vectors) and meta["dim"] == 4
    assert meta["sentences"] == 400 and meta["corpus"] is None


def test_vectors_are_refused_outside_lmforges_tagger(tmp_path) -> None:
    from test_pipeline import tiny_config

    with pytest.raises(UserError, match="vectors.enabled"):
        tiny_config(tmp_path, "task=classification", "vectors.enabled=true")


def test_the_tagger_looks_vectors_up_by_lower_cased_word_through_averaging_and_saving() -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from lmforge.data.tagging import FEATURE_NAMES, word_feature_ids, word_key
    from lmforge.models.tagger import TokenTagger, tagger_from_config
    from lmforge.models.transformer import TransformerConfig

    cfg = TransformerConfig(
        vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=32, dropout=0.0
    )
    model = TokenTagger(cfg, num_tags=3, feature_buckets=64, word_vectors=(3, 4))
    table = torch.arange(12.0).reshape(3, 4)
    model.set_word_vectors(torch.tensor([word_key(w) for w in ("dog", "the", "cat")]), table)
    features = torch.tensor(
        [[word_feature_ids(w) for w in ("The", "DOG", "zebra")] + [[0] * len(FEATURE_NAMES)]]
    )
    expected = torch.stack([table[1], table[0], torch.zeros(4), torch.zeros(4)])
    torch.testing.assert_close(model.vectors(features[..., -1])[0], expected)
    # An exponential average of the weights leaves the integer keys alone (they are no buffer).
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        averaged.update_parameters(model)
    torch.testing.assert_close(averaged.module.vectors(features[..., -1])[0], expected)
    # Saved and rebuilt from a finetuned folder's config: the same lookup.
    config = {"model": cfg.__dict__, "tags": ["A", "B", "C"], "feature_buckets": 64, "word_vectors": [3, 4]}
    rebuilt = tagger_from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.vectors(features[..., -1])[0], expected)
    # Shards from before the word key column: one clear error.
    ids = torch.tensor([[2, 10, 11, 3]])
    with pytest.raises(ValueError, match="re-run the tokenize stage"):
        model(ids, torch.ones_like(ids, dtype=torch.bool), features[..., :-1])
