"""The word_vectors stage and the tagger's lookup: words used alike get alike vectors, the stage
writes what it says (or only its marker when off), refuses what it cannot do, and the tagger
finds each word's vector by its lower-cased form, through weight averaging and a save/load."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lmforge.core.config import VectorsConfig
from lmforge.core.errors import UserError
from lmforge.models.word_vectors import load_word_vectors
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
            load_word_vectors(tiny_config(tmp_path, "task=tagging", "vectors.enabled=true"))
        on = tiny_config(
            tmp_path, "task=tagging", "vectors.enabled=true", "vectors.dim=4", "vectors.contexts=30"
        )
        word_vectors.run(on)
        vocab, vectors = load_word_vectors(on)
    meta = json.loads((tmp_path / "models/word_vectors/meta.json").read_text())
    assert meta["enabled"] and meta["words"] == len(vocab) == len(vectors) and meta["dim"] == 4
    assert meta["sentences"] == 400 and meta["corpus"] is None


def test_the_corpus_fraction_reads_a_fixed_share_of_the_corpus_and_all_the_task_text(tmp_path) -> None:
    from lmforge import word_vectors
    from test_pipeline import tiny_config, working_dir

    for folder, tag, n in (("data/prepared", "task", 30), ("data/corpus/prepared", "corpus", 2000)):
        (tmp_path / folder).mkdir(parents=True)
        with open(tmp_path / folder / "train.jsonl", "w") as handle:
            for i in range(n):
                handle.write(json.dumps({"text": f"{tag} text number {i} ."}) + "\n")
    corpus = ["corpus.source.kind=local", "corpus.source.path=unused.txt"]
    read = {}
    with working_dir(tmp_path):
        for fraction in (0.0, 0.25, 1.0):
            cfg = tiny_config(tmp_path, *corpus, f"vectors.corpus_fraction={fraction}")
            read[fraction] = [" ".join(words) for words in word_vectors._sentences(cfg)()]
        with pytest.raises(UserError, match="corpus_fraction"):
            tiny_config(tmp_path, *corpus, "vectors.corpus_fraction=1.5")
    task = [t for t in read[1.0] if t.startswith("task")]
    assert len(task) == 30 and read[0.0] == task
    quarter = [t for t in read[0.25] if t.startswith("corpus")]
    assert 400 < len(quarter) < 600 and read[0.25][:30] == task
    assert set(quarter) < set(read[1.0])  # a subset of the same texts, in the same order
    # The same share again: the same texts (a hash of each text, no random state).
    with working_dir(tmp_path):
        cfg = tiny_config(tmp_path, *corpus, "vectors.corpus_fraction=0.25")
        assert [" ".join(words) for words in word_vectors._sentences(cfg)()] == read[0.25]


def test_vectors_are_refused_outside_lmforges_tagger_and_classifier(tmp_path) -> None:
    from test_pipeline import tiny_config

    assert tiny_config(tmp_path, "task=classification", "vectors.enabled=true").vectors.enabled
    with pytest.raises(UserError, match="vectors.enabled"):
        tiny_config(tmp_path, "experiment=docsum", "vectors.enabled=true")
    with pytest.raises(UserError, match="vectors.enabled"):
        tiny_config(tmp_path, "model=hf", "pretrain.enabled=false", "vectors.enabled=true")


SENTENCES = [
    "The dog sleeps near the old cat .",
    "A happy bird doesn't sing , it's e-mail time .",
    "Dogs and cats wait near the river .",
] * 20


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_the_classifier_finds_words_in_token_ids_as_the_tokenizer_encodes_them(kind) -> None:
    """A word's key from the ids of running text equals the key of the word encoded on its own,
    case aside; the classifier adds the word's vector at its first token only, keeps its keys
    through weight averaging and a save/load, and a word without a vector gets nothing."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from lmforge.core.config import TokenizerConfig
    from lmforge.data.tokenization import special_ids, train_tokenizer
    from lmforge.models.transformer import SequenceClassifier, TransformerConfig, classifier_from_config
    from lmforge.models.word_vectors import token_kinds, token_word_keys, word_hash

    tokenizer = train_tokenizer(SENTENCES, TokenizerConfig(kind=kind, vocab_size=300, min_frequency=1))
    specials = special_ids()
    kinds = token_kinds(tokenizer, specials.values())
    cfg = TransformerConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        max_len=32,
        dropout=0.0,
    )
    words = ["the", "dog", "cat", "river", "sing"]
    keys, rows = token_word_keys(tokenizer, words)
    table = torch.arange(1.0, 1.0 + 5 * 4).reshape(5, 4)
    model = SequenceClassifier(cfg, num_labels=2, word_vectors=(5, 4))
    model.set_word_vectors(keys, table, rows, kinds)

    encoding = tokenizer.encode("The river and the cats dog")
    ids = torch.tensor([[specials["cls"], *encoding.ids, specials["sep"]]])
    found = model.word_keys(ids)[0]
    # One key per word, at its first token; each equals the word's own encoding's hash.
    starts = [i for i, k in enumerate(found.tolist()) if k]
    assert len(starts) == 6
    in_text = ["The", "river", "and", "the", "cats", "dog"]
    for position, word in zip(starts, in_text, strict=True):
        assert found[position] == word_hash(tokenizer.encode(word, add_special_tokens=False).ids)
    vectors = model.vectors(found[None])[0]
    expected = torch.zeros(len(found), 4)
    for position, word in zip(starts, in_text, strict=True):
        if word.lower() in words:  # "The" finds the row of "the"
            expected[position] = table[words.index(word.lower())]
    torch.testing.assert_close(vectors, expected)
    assert vectors[starts[4]].abs().sum() == 0  # "cats" has no vector

    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        averaged.update_parameters(model)
    torch.testing.assert_close(averaged.module.vectors(averaged.module.word_keys(ids))[0], expected)
    config = {"model": cfg.__dict__, "labels": ["neg", "pos"], "pooling": "mean", "word_vectors": [5, 4]}
    rebuilt = classifier_from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.vectors(rebuilt.word_keys(ids))[0], expected)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(ids), model(ids))
    # The vectors reach the logits: other vectors, other logits.
    model.vectors.table.mul_(-1)
    assert not torch.allclose(rebuilt(ids), model(ids))


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
