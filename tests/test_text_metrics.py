"""Text metrics: scales, the keys a report holds, and no downloaded data needed (their parity with
sacrebleu and rouge-score is tests/test_metric_parity.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.metrics.text import chrf_score, score_texts

ROOT = Path(__file__).resolve().parents[1]
PREDICTIONS = [
    "A man is riding a bike down the street.",
    "Two dogs play in the snow",
    "the cat is on the mat",
    "Children are playing soccer on a field.",
]
REFERENCES = [
    "A man is riding a bicycle on the street.",
    "Two dogs are playing in snow.",
    "There is a cat on the mat.",
    "Kids play football in a park.",
]


def test_identical_texts_score_full_marks_and_lengths_are_words() -> None:
    scores = score_texts(REFERENCES, REFERENCES)
    for key in ("sacrebleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert scores[key] == pytest.approx(100.0, abs=1e-3), key
    assert scores["exact_match"] == 1.0
    assert scores["mean_pred_words"] == scores["mean_ref_words"] == (9 + 6 + 7 + 6) / 4


def test_scores_on_the_same_texts_as_torchmetrics_where_they_agree() -> None:
    """Every n-gram order matches here, so BLEU is torchmetrics' own figure too (they differ only
    in smoothing an order without matches); chrF and ROUGE follow sacrebleu and rouge-score
    (tests/test_metric_parity.py), not torchmetrics' CHRFScore and ROUGEScore."""
    from torchmetrics.text import SacreBLEUScore

    scores = score_texts(PREDICTIONS, REFERENCES)
    targets = [[r] for r in REFERENCES]
    assert scores["sacrebleu"] == pytest.approx(
        100 * float(SacreBLEUScore(tokenize="13a")(PREDICTIONS, targets)), rel=1e-5
    )
    assert 0 < scores["sacrebleu"] < scores["chrf"] < 100
    assert scores["rougeL"] <= scores["rougeLsum"] + 1e-9  # one line each: the same
    assert scores["exact_match"] == 0.0


def test_chrf_counts_the_reference_of_an_output_that_matches_nothing() -> None:
    # One sentence right, one empty: recall over both references is what chrF measures.
    both = chrf_score(["A dog runs.", ""], ["A dog runs.", "Two cats sleep."])
    alone = chrf_score(["A dog runs."], ["A dog runs."])
    assert alone == pytest.approx(1.0)
    assert 0 < both < alone


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_texts(["a", "b"], ["a"])


def test_scores_need_no_downloaded_data() -> None:
    # nltk's data path empty and its downloader broken: ROUGE uses nltk's PorterStemmer (code)
    # only, never a sentence splitter that needs punkt.
    code = (
        "import nltk\n"
        "def refuse(*a, **k): raise RuntimeError('download')\n"
        "nltk.download = refuse\n"
        "from lmforge.metrics.text import score_texts\n"
        "s = score_texts(['dogs running\\nhere'], ['dog runs\\nhere'])\n"
        "print(round(s['rouge1']), round(s['rougeLsum']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "NLTK_DATA": str(ROOT / "no-such-folder")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "100 100"  # stemmed: dogs running = dog runs
