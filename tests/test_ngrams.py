"""The n-gram model a classifier can be fused with (finetune.ngram_fusion, lmforge.models.ngrams):
its TF-IDF values, its fit, and the fused classifier's probabilities through a save and load."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.core.config import TokenizerConfig
from lmforge.data.datasets import frame_record
from lmforge.data.tokenization import special_ids, train_tokenizer
from lmforge.models.ngrams import NgramLogits
from lmforge.models.transformer import SequenceClassifier, TransformerConfig, classifier_from_config
from lmforge.models.word_vectors import token_edges, token_kinds

POSITIVE = ["good", "great", "fine", "lovely"]
NEGATIVE = ["bad", "dull", "awful", "poor"]
FILLER = ["the", "movie", "film", "plot", "was", "a", "story", "and", "cast", "it"]


def texts(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Filler with one sentiment word; "not" before a word flips its label (a bigram's job)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        negated = rng.random() < 0.3
        word = rng.choice(POSITIVE if label != negated else NEGATIVE)
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), f"not {word}" if negated else word)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [text for text, _ in texts(400, seed=1)]
    return train_tokenizer(corpus, TokenizerConfig(kind="bpe", vocab_size=300, min_frequency=1))


def encode(tokenizer, rows: list[str]) -> torch.Tensor:
    specials = special_ids()
    encoded = [[specials["cls"], *tokenizer.encode(text).ids, specials["sep"]] for text in rows]
    width = max(map(len, encoded))
    return torch.tensor([ids + [specials["pad"]] * (width - len(ids)) for ids in encoded])


def model_for(tokenizer, buckets: int = 4096) -> NgramLogits:
    model = NgramLogits(buckets, 2, tokenizer.get_vocab_size(), 64)
    model.set_word_starts(token_kinds(tokenizer, special_ids().values()))
    return model


def test_a_texts_values_are_its_tf_idf_vector_of_unit_length(tokenizer) -> None:
    """ "good good movie": good twice (sublinear tf 1 + ln 2), movie, "good good", "good movie"
    once each; with every IDF at 2 the vector is (1 + ln 2, 1, 1, 1) * 2, normalised, whatever
    the padding."""
    model = model_for(tokenizer)
    model.idf.fill_(2.0)
    ids = encode(tokenizer, ["good good movie", "the plot was a story and the cast"])
    buckets, count, first = model.ngrams(ids)
    values = model.values(buckets, count)
    row = {}
    for bucket, value in zip(buckets[0].tolist(), values[0].tolist(), strict=True):
        if value:
            row[bucket] = row.get(bucket, 0.0) + value
    expected = torch.tensor([1 + math.log(2), 1.0, 1.0, 1.0])
    expected = expected / expected.norm()
    assert sorted(row.values()) == pytest.approx(sorted(expected.tolist()))
    assert int(first[0].sum()) == 4 and int((count[0] > 0).sum()) == 5  # "good" occurs twice
    # The second text: 8 words, 7 pairs, "the" twice; its vector has unit length too.
    assert int(first[1].sum()) == 7 + 7
    norm = sum(v**2 * c for v, c in zip(values[1].tolist(), count[1].tolist(), strict=True) if c) ** 0.5
    assert norm == pytest.approx(1.0)


def test_the_fit_learns_words_and_the_bigrams_that_flip_them(tokenizer) -> None:
    train = texts(600)
    model = model_for(tokenizer)
    ids, labels = encode(tokenizer, [t for t, _ in train]), torch.tensor([y for _, y in train])
    fitted = model.fit([(ids[i : i + 100], labels[i : i + 100]) for i in range(0, len(train), 100)])
    assert fitted["train_accuracy"] > 0.97
    # Unseen texts: the same words in other places, negation included.
    probe = ["it was good", "it was not good", "the cast was awful", "the cast was not awful"]
    predicted = model(encode(tokenizer, probe)).argmax(-1).tolist()
    assert predicted == [1, 0, 0, 1]
    # n-grams seen in one train text only get no IDF, so no weight (min_df=2).
    assert bool((model.idf > 0).sum() < fitted["ngrams"] + 1)


def test_the_fused_classifier_mixes_the_two_models_probabilities_through_a_save(tokenizer) -> None:
    cfg = TransformerConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        max_len=64,
        dropout=0.0,
    )
    model = SequenceClassifier(cfg, num_labels=2, ngram_buckets=4096)
    model.ngrams.set_word_starts(token_kinds(tokenizer, special_ids().values()))
    train = texts(300)
    ids, labels = encode(tokenizer, [t for t, _ in train]), torch.tensor([y for _, y in train])
    model.ngrams.fit([(ids, labels)])
    model.eval()
    probe = encode(tokenizer, ["it was not good", "the plot was lovely"])
    with torch.no_grad():
        own = model(probe).softmax(-1)  # weight 0: the classifier alone, as in training
        other = model.ngrams(probe).softmax(-1)
        model.ngram_weight.fill_(0.3)
        mixed = model(probe).softmax(-1)
    torch.testing.assert_close(mixed, 0.7 * own + 0.3 * other)
    config = {"model": cfg.__dict__, "labels": ["neg", "pos"], "pooling": "mean", "ngram_buckets": 4096}
    rebuilt = classifier_from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(probe).softmax(-1), mixed)


def _feature_matrix(model: NgramLogits, ids: torch.Tensor):
    """The fitted model's TF-IDF features as a scipy matrix, texts by buckets."""
    import scipy.sparse as sp

    buckets, count, _ = model.ngrams(ids)
    values = model.values(buckets, count)
    rows = torch.arange(len(ids)).unsqueeze(1).expand_as(buckets)
    kept = values > 0
    data = (values[kept].double().numpy(), (rows[kept].numpy(), buckets[kept].numpy()))
    return sp.csr_matrix(data, shape=(len(ids), model.buckets))  # repeated n-grams add up


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.sampled_from([2, 3]), noise=st.floats(0.0, 0.3))
def test_the_fit_is_scikit_learns_logistic_regression_on_the_same_features(
    tokenizer, seed: int, classes: int, noise: float
) -> None:
    """What the baselines stage fits (``LogisticRegression(C=10)``, L-BFGS), on the same TF-IDF
    features, for three classes; for two, ``C=20`` (``NgramLogits.fit`` says why): the fitted
    class probabilities agree within 2e-3, on train and unseen texts.
    Probabilities rather than coefficients: the L2 penalty makes both optima unique, but weights
    along directions the data barely constrain converge slowly and differ more than the
    predictions they make. The fit runs scikit-learn at tolerance 1e-6 (its default 1e-4 stops
    up to 5e-3 away on separable data) and stores float32 weights; 2e-3 leaves room for that and
    still catches a wrong objective or a binary vector mapped to the two rows off by 2x (it
    moves the probabilities by 0.1)."""
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    rows = texts(240, seed=seed)
    # A third class: texts that mention the plot; then some labels replaced at random.
    labels = [2 if classes == 3 and "plot" in t.split() else y for t, y in rows]
    labels = [y if rng.random() >= noise else rng.randrange(classes) for y in labels]
    assert set(labels) == set(range(classes))
    model = NgramLogits(4096, classes, tokenizer.get_vocab_size(), 64)
    model.set_word_starts(token_kinds(tokenizer, special_ids().values()))
    ids, y = encode(tokenizer, [t for t, _ in rows]), torch.tensor(labels)
    model.fit([(ids[i : i + 80], y[i : i + 80]) for i in range(0, len(rows), 80)], c=10.0)
    equivalent_c = 20.0 if classes == 2 else 10.0
    reference = LogisticRegression(C=equivalent_c, tol=1e-10, max_iter=10_000).fit(
        _feature_matrix(model, ids), labels
    )
    unseen = encode(tokenizer, [t for t, _ in texts(60, seed=seed + 1)])
    for batch in (ids, unseen):
        with torch.no_grad():
            ours = model(batch).softmax(-1).double().numpy()
        theirs = reference.predict_proba(_feature_matrix(model, batch))
        assert abs(ours - theirs).max() < 2e-3


def _pairwise_ngrams(model: NgramLogits, input_ids: torch.Tensor):
    """The counting the sort replaced: every pair of n-grams of a row compared (M^2)."""
    keys = model.word_keys(input_ids)
    order = (keys == 0).to(torch.int8).argsort(dim=1, stable=True)
    words = keys.gather(1, order)
    pairs = (words[:, :-1] * 1_000_003 + words[:, 1:]) * 2_654_435_761
    pairs = torch.where((words[:, :-1] > 0) & (words[:, 1:] > 0), pairs, 0)
    grams = torch.cat([words, pairs], dim=1)
    present = grams != 0
    same = (grams.unsqueeze(2) == grams.unsqueeze(1)) & present.unsqueeze(1) & present.unsqueeze(2)
    earlier = torch.ones(same.shape[1:], dtype=torch.bool).tril(-1)
    first = present & ~(same & earlier).any(-1)
    return grams.remainder(model.buckets) * present, same.sum(-1).to(torch.float32), first


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), words=st.integers(1, 40), rows=st.integers(1, 5))
def test_counting_ngrams_by_sorting_equals_comparing_every_pair(tokenizer, seed, words, rows) -> None:
    """Texts of a few repeated words (so n-grams repeat), ragged rows: the same buckets, counts
    and first occurrences as the pairwise count, element by element."""
    rng = random.Random(seed)
    vocab = ["good", "bad", "movie", "not", "the"][: rng.randint(1, 5)]
    batch = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, words))) for _ in range(rows)]
    model, ids = model_for(tokenizer, buckets=97), encode(tokenizer, batch)
    for got, expected in zip(model.ngrams(ids), _pairwise_ngrams(model, ids), strict=True):
        assert torch.equal(got, expected)


def test_a_text_longer_than_the_encoder_reaches_it_cut_and_the_n_gram_model_whole(tokenizer) -> None:
    """finetune.ngram_max_len: the classifier reads up to 1,024 tokens of a text; its encoder
    sees `[CLS] ids [SEP]` cut to max_len, exactly as a text framed at max_len, and the n-gram
    model every word, the tail's included (a review's verdict is often in its last lines)."""
    cfg = TransformerConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        max_len=16,
        dropout=0.0,
    )
    specials = special_ids()
    torch.manual_seed(0)
    cut = SequenceClassifier(cfg, 2, ngram_buckets=4096, encoder_len=16, sep_id=specials["sep"])
    plain = SequenceClassifier(cfg, 2, ngram_buckets=4096)
    plain.load_state_dict(cut.state_dict())
    cut.eval(), plain.eval()
    texts_ = ["the movie was good " * 8 + "but the end was awful", "good film"]
    long = [tokenizer.encode(t).ids for t in texts_]
    wide = torch.nn.utils.rnn.pad_sequence(
        [frame_record(ids, 64, specials["cls"], specials["sep"]) for ids in long],
        batch_first=True,
        padding_value=specials["pad"],
    )
    framed = torch.nn.utils.rnn.pad_sequence(
        [frame_record(ids, 16, specials["cls"], specials["sep"]) for ids in long],
        batch_first=True,
        padding_value=specials["pad"],
    )
    assert wide.shape[1] > 16 == framed.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(cut(wide), plain(framed))
    cut.ngrams.set_word_starts(token_kinds(tokenizer, specials.values()))
    whole, head = cut.ngrams.ngrams(wide)[0], cut.ngrams.ngrams(framed)[0]
    assert (whole[0] > 0).sum() > (head[0] > 0).sum()  # "awful" and the tail's pairs
    assert torch.equal(whole[1][whole[1] > 0].sort().values, head[1][head[1] > 0].sort().values)


def test_with_token_edges_a_word_is_split_from_the_punctuation_beside_it(tokenizer) -> None:
    """Raw text glues punctuation to words ("good." is one byte-level BPE pre-token run): with
    the tokenizer's token edges the n-gram model splits them as scikit-learn's vectorizer does,
    so "good." holds the key of "good" and "(good)" is three words; without them (the word
    vectors' keys) "good." stays a word of its own. ("good" after "(" has no space marker, so
    its ids, and its key, may differ from those of " good".)"""
    specials = special_ids()
    plain, split = model_for(tokenizer), model_for(tokenizer)
    split.set_word_starts(token_kinds(tokenizer, specials.values()), token_edges(tokenizer))
    ids = encode(tokenizer, ["it was good", "it was good.", "it was (good)"])

    def words(model: NgramLogits) -> list[set[int]]:
        return [set(row[row > 0].tolist()) for row in model.word_keys(ids)]

    ours, theirs = words(split), words(plain)
    assert len(ours[0]) == 3 and ours[0] < ours[1] and len(ours[1] - ours[0]) == 1  # + "."
    assert len(ours[2]) == 5 and len(ours[2] - ours[0]) >= 2  # it, was, "(", "good", ")"
    assert theirs[0] == ours[0] and not theirs[0] <= theirs[1]  # "good." a word apart
