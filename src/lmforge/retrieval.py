"""The nearest training pair of a text, by TF-IDF cosine similarity over the sources.

Two users: the ``baselines`` stage's retrieval baseline (the nearest training source's target
*is* the prediction), and retrieval-augmented text-to-text (``task.retrieval=true``): each
source is read with the nearest training pair's target in front of it, ``neighbour || source``,
so the model can copy, edit or ignore it (Wang et al., ACL 2022, "Training Data is More Valuable
than You Think", arXiv 2203.08773). A training source never retrieves itself (leave-one-out),
so the model learns from neighbours as good as those it gets at test time, not from its own
answer; validation and test sources, and any text at inference, retrieve from the train split
only.

scikit-learn does the counting; no Lightning or torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.errors import UserError

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
        import numpy as np

        if leave_one_out:
            if list(queries) != self.sources:
                raise ValueError("leave_one_out queries must be the training sources, in order")
            if len(self.sources) < 2:
                raise UserError("retrieval needs at least two training pairs to leave one out")
        found: list[int] = []
        vectors = self.vectorizer.transform(list(queries))
        for start in range(0, vectors.shape[0], chunk):
            similarity = (vectors[start : start + chunk] @ self.matrix.T).toarray()
            if leave_one_out:
                rows = np.arange(similarity.shape[0])
                similarity[rows, start + rows] = -1.0  # cosine >= 0: never the row itself
            found.extend(int(i) for i in np.argmax(similarity, axis=1))
        return found

    def nearest_targets(self, queries: Sequence[str], *, leave_one_out: bool = False) -> list[str]:
        return [self.targets[i] for i in self.nearest(queries, leave_one_out=leave_one_out)]

    def augment(self, queries: Sequence[str], *, leave_one_out: bool = False) -> list[str]:
        """Each query with its neighbour's target in front: ``target || query``. The neighbour
        comes first so that a source truncated to its token budget keeps it."""
        return [
            f"{target}{SEPARATOR}{query}"
            for target, query in zip(
                self.nearest_targets(queries, leave_one_out=leave_one_out), queries, strict=True
            )
        ]
