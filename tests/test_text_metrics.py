"""Text metrics: scales, agreement with torchmetrics, and no nltk or downloaded data needed."""

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
    for key in ("sacrebleu", "chrf", "rouge1", "rouge2", "rougeL"):
        assert scores[key] == pytest.approx(100.0, abs=1e-3), key
    assert scores["exact_match"] == 1.0
    assert scores["mean_pred_words"] == scores["mean_ref_words"] == (9 + 6 + 7 + 6) / 4


def test_scores_match_torchmetrics_on_the_same_texts() -> None:
    from torchmetrics.text import CHRFScore, ROUGEScore, SacreBLEUScore

    scores = score_texts(PREDICTIONS, REFERENCES)
    targets = [[r] for r in REFERENCES]
    assert scores["sacrebleu"] == pytest.approx(
        100 * float(SacreBLEUScore(tokenize="13a")(PREDICTIONS, targets))
    )
    assert scores["chrf"] == pytest.approx(
        100 * float(CHRFScore(n_word_order=0)(PREDICTIONS, targets)), abs=1e-4
    )
    rouge = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(PREDICTIONS, REFERENCES)
    assert scores["rougeL"] == pytest.approx(100 * float(rouge["rougeL_fmeasure"]))
    assert 0 < scores["sacrebleu"] < scores["chrf"] < 100
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


def test_scores_work_without_nltk() -> None:
    # nltk blocked outright: ROUGE must not reach for its stemmer or sentence splitter.
    code = (
        "import sys; sys.modules['nltk'] = None\n"
        "from lmforge.metrics.text import score_texts\n"
        "print(round(score_texts(['a cat sat'], ['a cat sat'])['rougeL']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "100"
