"""The nearest training pair of a text, by TF-IDF cosine similarity over the sources.

Three users: the ``baselines`` stage's retrieval baseline (the nearest training source's target
*is* the prediction), and retrieval-augmented text-to-text (``task.retrieval=true``): each
source is read with the nearest training pair's target in front of it, ``neighbour || source``,
so the model can copy, edit or ignore it (Wang et al., ACL 2022, "Training Data is More Valuable
than You Think", arXiv 2203.08773). A training source never retrieves itself (leave-one-out),
so the model learns from neighbours as good as those it gets at test time, not from its own
answer; validation and test sources, and any text at inference, retrieve from the train split
only. And retrieve-and-rerank decoding (``generate.rerank``): the targets of the ``k`` nearest
training pairs compete with the decoded text as candidate outputs (:meth:`NearestPairs.top`).

scikit-learn does the counting; no Lightning or torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmforge.core.errors import UserError

# Between the retrieved target and the source. Plain text, so the project tokenizer (trained
# on the raw sources and targets) needs no new token.
SEPARATOR = " || "


class NearestPairs:
    """TF-IDF (word uni- and bigrams, sublinear tf) over ``sources``; :meth:`nearest` gives the
    index of each query's most similar source (the first of equals)."""

    def __init__(self, sources: Sequence[str], targets: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if not sources:
            raise UserError("retrieval needs at least one training pair; the train split is empty")
        self.sources, self.targets = list(sources), list(targets)
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform(self.sources)  # rows L2-normalised: dot = cosine

    def nearest(self, queries: Sequence[str], *, leave_one_out: bool = False, chunk: int = 512) -> list[int]:
        """Index of the nearest training source of each query. ``leave_one_out``: the queries
        are the training sources themselves, in order, and query ``i`` may not return ``i``."""
        indices, _ = self.top(queries, 1, leave_one_out=leave_one_out, chunk=chunk)
        return [int(row[0]) for row in indices]

    def top(
        self, queries: Sequence[str], k: int, *, leave_one_out: bool = False, chunk: int = 512
    ) -> tuple[Any, Any]:
        """The ``k`` nearest training sources of each query, nearest first (the first of equals
        first), as ``[queries, k]`` arrays of indices and of cosine similarities."""
        import numpy as np

        if leave_one_out:
            if list(queries) != self.sources:
                raise ValueError("leave_one_out queries must be the training sources, in order")
            if len(self.sources) < 2:
                raise UserError("retrieval needs at least two training pairs to leave one out")
        k = min(k, len(self.sources) - leave_one_out)
        vectors = self.vectorizer.transform(list(queries))
        indices, similarities = [], []
        for start in range(0, vectors.shape[0], chunk):
            similarity = (vectors[start : start + chunk] @ self.matrix.T).toarray()
            if leave_one_out:
                rows = np.arange(similarity.shape[0])
                similarity[rows, start + rows] = -1.0  # cosine >= 0: never the row itself
            if k == 1:  # argmax: the first of equals, without sorting every row
                order = np.argmax(similarity, axis=1)[:, None]
            else:
                order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
            indices.append(order)
            similarities.append(np.take_along_axis(similarity, order, axis=1))
        if not indices:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
        return np.concatenate(indices), np.concatenate(similarities)

    def nearest_targets(self, queries: Sequence[str], *, leave_one_out: bool = False) -> list[str]:
        return [self.targets[i] for i in self.nearest(queries, leave_one_out=leave_one_out)]

    def augment(
        self, queries: Sequence[str], *, leave_one_out: bool = False, neighbours: Sequence[int] | None = None
    ) -> list[str]:
        """Each query with its neighbour's target in front: ``target || query``. The neighbour
        comes first so that a source truncated to its token budget keeps it. ``neighbours``:
        each query's nearest index when already searched (:meth:`top`'s first column)."""
        if neighbours is None:
            neighbours = self.nearest(queries, leave_one_out=leave_one_out)
        return [f"{self.targets[i]}{SEPARATOR}{query}" for i, query in zip(neighbours, queries, strict=True)]
