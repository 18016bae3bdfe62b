"""Stage, word_vectors: distributional word vectors from unlabelled text, for the tagger and the
classifier.

A word's part of speech shows in the words around it ("the ___ of", "to ___ the"), and so does
much of its sentiment ("a ___ performance", "___ and moving"): an unlabelled corpus shows a
model's words in many more such contexts than its labelled set, unseen words included, and words
used alike ("superb", "terrific") get alike vectors. With ``vectors.enabled`` this
stage counts, for each of the ``vectors.max_words`` most frequent words (lower-cased, seen at
least ``vectors.min_count`` times), which of the ``vectors.contexts`` most frequent words stand
at each offset within ``vectors.window`` of it (left and right apart: "the ___" is not
"___ the"), weighs the counts by positive pointwise mutual information (context frequencies
smoothed by the power 0.75) and keeps a truncated SVD of that matrix, ``vectors.dim`` wide, each
row scaled to unit length: the count-based counterpart of word2vec (Levy & Goldberg 2014), in
seconds to minutes on a CPU.

The text: the task's train split (its words; never val or test) and, when a corpus is
configured (``corpus=imdb``), the prepared corpus's train texts, which ``prepare_corpus`` has
already stripped of every text equal to, or holding, one of the task's val/test texts.

Writes ``models/word_vectors/``: ``vectors.npy`` (float32 ``[words, dim]``), ``vocab.json``
(the words, row order) and ``meta.json``; with ``vectors.enabled=false`` only the ``meta.json``
marker. The tasks that take them (``Task.supports_word_vectors``) add each word's vector, projected
to the model width, to its first subword's embedding
(:class:`lmforge.models.word_vectors.WordVectors`); the tagger looks it up by its lower-cased
word, the classifier by the word's token ids
(:class:`lmforge.models.word_vectors.TokenWordKeys`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from lmforge.core.cli import stage
from lmforge.core.config import Config, VectorsConfig
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, read_jsonl, write_json
from lmforge.core.task_registry import get_task
from lmforge.data.tokenization import in_sample
from lmforge.data.words import WORD, text_words  # noqa: F401  (re-exported)


def train_word_vectors(
    sentences: Callable[[], Iterable[list[str]]], config: VectorsConfig, progress=None
) -> tuple[list[str], np.ndarray, dict]:
    """Vectors for the frequent words of ``sentences()`` (called twice: once to count, once to
    collect contexts); returns the words, a float32 ``[words, dim]`` array and counts."""
    import scipy.sparse as sparse
    from scipy.sparse.linalg import svds

    counts: Counter[str] = Counter()
    n_sentences = 0
    for words in sentences():
        counts.update(w.lower() for w in words)
        n_sentences += 1
    vocab = [w for w, c in counts.most_common(config.max_words) if c >= config.min_count]
    if len(vocab) <= config.dim:
        raise UserError(
            f"vectors: only {len(vocab)} words occur at least vectors.min_count={config.min_count} "
            f"times, too few for vectors.dim={config.dim}; add unlabelled text (corpus=...) or "
            "lower vectors.dim"
        )
    index = {w: i + 1 for i, w in enumerate(vocab)}  # 0: a word outside the vocabulary
    width = config.contexts + 1  # context column 0 of each offset: a rare word or the edge
    offsets = [o for o in range(-config.window, config.window + 1) if o]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for words in sentences() if progress is None else progress(sentences()):
        ids = np.fromiter((index.get(w.lower(), 0) for w in words), dtype=np.int64, count=len(words))
        context = np.where(ids <= config.contexts, ids, 0)
        for k, offset in enumerate(offsets):
            if abs(offset) >= len(ids):
                continue
            centre, around = (
                (ids[-offset:], context[:offset]) if offset < 0 else (ids[:-offset], context[offset:])
            )
            known = centre > 0
            rows.append(centre[known] - 1)
            cols.append(around[known] + k * width)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    matrix = sparse.coo_matrix(
        (np.ones(len(row), dtype=np.float64), (row, col)), shape=(len(vocab), len(offsets) * width)
    ).tocsr()
    matrix.sum_duplicates()
    total = matrix.sum()
    p_word = np.asarray(matrix.sum(axis=1)).ravel() / total
    p_context = np.asarray(matrix.sum(axis=0)).ravel() ** 0.75
    p_context /= p_context.sum()
    coo = matrix.tocoo()
    pmi = np.log(coo.data / total / (p_word[coo.row] * p_context[coo.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)
    u, s, _ = svds(ppmi, k=config.dim, random_state=0)
    vectors = u * np.sqrt(s)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-8)
    stats = {"sentences": n_sentences, "tokens": int(sum(counts.values())), "pairs": int(len(row))}
    return vocab, vectors.astype(np.float32), stats


def _sentences(cfg: Config) -> Callable[[], Iterator[list[str]]]:
    prepared = Path(cfg.paths.prepared) / "train.jsonl"
    corpus = Path(cfg.paths.corpus_prepared) / "train.jsonl"
    if not prepared.is_file():
        raise UserError(f"{prepared} is missing; run the prepare stage first (dvc repro prepare)")
    if cfg.corpus.enabled and not corpus.is_file():
        raise UserError(f"{corpus} is missing; run the prepare_corpus stage first (dvc repro prepare_corpus)")

    fraction = cfg.vectors.corpus_fraction
    task = get_task(cfg.task.name)

    def sentences() -> Iterator[list[str]]:
        for record in read_jsonl(prepared):
            yield task.sentence_words(record)
        if cfg.corpus.enabled and fraction > 0:
            for record in read_jsonl(corpus):
                if in_sample(record["text"], fraction):
                    yield text_words(record["text"])

    return sentences


def run(cfg: Config) -> None:
    if not cfg.vectors.enabled:
        with atomic_dir(cfg.paths.word_vectors) as out:
            write_json(out / "meta.json", {"enabled": False})
        print("word_vectors: off (vectors.enabled=false)")
        return
    from tqdm import tqdm

    started = time.perf_counter()
    sentences = _sentences(cfg)

    def progress(items: Iterable[list[str]]) -> Iterable[list[str]]:
        return tqdm(items, desc="word_vectors (contexts)", unit=" sentences", mininterval=1.0, disable=None)

    vocab, vectors, stats = train_word_vectors(sentences, cfg.vectors, progress)
    meta = {
        "enabled": True,
        "words": len(vocab),
        "dim": int(vectors.shape[1]),
        "corpus": cfg.corpus.source.path if cfg.corpus.enabled else None,
        "corpus_fraction": cfg.vectors.corpus_fraction if cfg.corpus.enabled else 0.0,
        **stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_dir(cfg.paths.word_vectors) as out:
        np.save(out / "vectors.npy", vectors)
        write_json(out / "vocab.json", vocab)
        write_json(out / "meta.json", meta)
    print(
        f"word_vectors: {len(vocab)} words x {vectors.shape[1]} from {stats['tokens']:,} tokens in "
        f"{stats['sentences']:,} texts ({meta['seconds']} s) -> {cfg.paths.word_vectors}"
    )


main = stage(run)

if __name__ == "__main__":
    main()
