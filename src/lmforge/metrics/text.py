"""Scores of generated text against references, from torchmetrics: BLEU, chrF, ROUGE, exact match.

BLEU and chrF are corpus-level, ROUGE the mean of per-pair F-measures. Nothing needs downloaded
data or nltk: SacreBLEU's
``13a`` tokenizer and chrF are pure Python, and ROUGE runs without a stemmer and without
``rougeLsum`` (the two options of torchmetrics' ROUGEScore that need nltk; nltk's sentence
splitter would also need its ``punkt`` data downloaded at run time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# Published figures print BLEU, chrF and ROUGE on a 0-100 scale; torchmetrics returns 0-1.
PERCENT = 100.0
CHRF_ORDER, CHRF_BETA = 6, 2.0
_EPS = 1e-16


def _char_ngrams(text: str) -> list[Counter]:
    chars = text.strip().replace(" ", "")
    return [Counter(chars[i : i + n] for i in range(len(chars) - n + 1)) for n in range(1, CHRF_ORDER + 1)]


def chrf_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (character 1-6-grams without spaces, no word n-grams, beta 2), 0-1.

    torchmetrics' ``CHRFScore(n_word_order=0)`` formula (its default, n_word_order=2, is chrF++),
    with one difference: a prediction that matches nothing of its reference still counts the
    reference's n-grams, as sacrebleu counts them. CHRFScore keeps a sentence's reference counts
    only when its F-score beats 0, so empty or wholly wrong outputs cost no recall there and the
    corpus score is inflated. CHRFScore also keeps every n-gram count as a torch scalar: 24 s for
    296 docstring pairs on this project's 2-core machine, against milliseconds here.
    tests/test_text_metrics.py checks both agree where every prediction matches something.
    """
    matches, hyp_totals, ref_totals = ([0] * CHRF_ORDER for _ in range(3))
    for prediction, reference in zip(predictions, references, strict=True):
        for n, (hyp, ref) in enumerate(zip(_char_ngrams(prediction), _char_ngrams(reference), strict=True)):
            matches[n] += sum((hyp & ref).values())
            hyp_totals[n] += sum(hyp.values())
            ref_totals[n] += sum(ref.values())
    factor = CHRF_BETA**2
    total = 0.0
    for match, hyp_total, ref_total in zip(matches, hyp_totals, ref_totals, strict=True):
        precision = match / hyp_total if hyp_total else 0.0
        recall = match / ref_total if ref_total else 0.0
        total += (1 + factor) * precision * recall / max(factor * precision + recall, _EPS)
    return total / CHRF_ORDER


def score_texts(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Score ``predictions[i]`` against ``references[i]`` (one reference each).

    Returns, all floats:

    - ``sacrebleu``: corpus BLEU of detokenized, cased text with SacreBLEU's ``13a`` tokenizer,
      0-100 as ``sacrebleu`` prints it;
    - ``chrf``: corpus chrF (character 1-6-grams, beta 2, sacrebleu's default chrF2; see
      :func:`chrf_score`), 0-100;
    - ``rouge1``, ``rouge2``, ``rougeL``: mean ROUGE F-measures, 0-100 (torchmetrics' ROUGE
      lowercases and keeps ``[a-z0-9]`` words; no stemming);
    - ``exact_match``: share of predictions equal to their reference after stripping outer
      whitespace, 0-1 (like accuracy);
    - ``mean_pred_words`` / ``mean_ref_words``: mean whitespace-separated words per text.
    """
    from torchmetrics.text import ROUGEScore, SacreBLEUScore

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "give one prediction per reference"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    bleu = SacreBLEUScore(tokenize="13a", lowercase=False)
    rouge = ROUGEScore(use_stemmer=False, rouge_keys=("rouge1", "rouge2", "rougeL"))
    targets = [[reference] for reference in references]
    scores = {
        "sacrebleu": float(bleu(predictions, targets)) * PERCENT,
        "chrf": chrf_score(predictions, references) * PERCENT,
    }
    rouge_scores = rouge(predictions, references)
    for key in ("rouge1", "rouge2", "rougeL"):
        scores[key] = float(rouge_scores[f"{key}_fmeasure"]) * PERCENT
    scores["exact_match"] = sum(
        p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)
    ) / len(predictions)
    scores["mean_pred_words"] = sum(len(p.split()) for p in predictions) / len(predictions)
    scores["mean_ref_words"] = sum(len(r.split()) for r in references) / len(references)
    return scores


# How the figures are named wherever they are printed (evaluate, report, baselines).
SCORE_NAMES = (
    ("sacrebleu", "BLEU"),
    ("chrf", "chrF"),
    ("rouge1", "ROUGE-1"),
    ("rouge2", "ROUGE-2"),
    ("rougeL", "ROUGE-L"),
    ("exact_match", "exact match"),
    ("target_perplexity", "target perplexity"),
)


def format_scores(values: dict, digits: int = 2) -> str:
    """The text-to-text figures present in ``values``, e.g. ``BLEU 31.20, chrF 55.04``."""
    return ", ".join(f"{label} {values[key]:.{digits}f}" for key, label in SCORE_NAMES if key in values)
