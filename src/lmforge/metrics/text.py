"""Scores of generated text against references: BLEU, chrF, ROUGE, exact match, each as its
reference implementation computes it, so a figure reads like a published one.

- BLEU is SacreBLEU's default corpus BLEU (``13a`` tokenizer, cased, exponential smoothing):
  torchmetrics' ``SacreBLEUScore`` tokenizes and counts the n-grams, and :func:`bleu_from_counts`
  turns the counts into the score as ``sacrebleu.BLEU.compute_bleu`` does.
- chrF is SacreBLEU's default chrF2 (:func:`chrf_score`).
- ROUGE is Google's ``rouge-score`` package, the implementation Hugging Face's summarization
  examples use: ``rouge1``, ``rouge2``, ``rougeL`` and ``rougeLsum`` with its Porter stemmer.

tests/test_metric_parity.py checks BLEU and chrF against ``sacrebleu`` and ROUGE against
``rouge-score`` on random texts (sacrebleu is a ``dev`` dependency only). Nothing downloads
data at run time: the 13a tokenizer and chrF are pure Python, and nltk is used for its
PorterStemmer only (code, no ``nltk_data``); no sentence splitter runs (see :func:`score_texts`
on ``rougeLsum``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from lmforge import __version__

# Published figures print BLEU, chrF and ROUGE on a 0-100 scale; torchmetrics returns 0-1.
PERCENT = 100.0
CHRF_ORDER, CHRF_BETA = 6, 2.0
BLEU_ORDER = 4
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# sacrebleu's floor for log(0) (sacrebleu.utils.my_log): a BLEU with a zero precision is 0.
_LOG_ZERO = -9999999999.0


def _torchmetrics_version() -> str:
    from importlib.metadata import version

    return version("torchmetrics")


def sacrebleu_signature() -> str:
    """The signature of ``sacrebleu``'s default BLEU, formatted as ``sacrebleu`` formats it, for
    the BLEU :func:`score_texts` computes. All fields but ``version`` are the settings sacrebleu
    would print for the same figure (tests/test_metric_parity.py compares them with sacrebleu's
    own signature). ``version`` names what computed it, not a sacrebleu release: sacrebleu is
    not installed at run time, and claiming its version would say it ran.
    """
    return (
        "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|"
        f"version:torchmetrics-{_torchmetrics_version()}+lmforge-{__version__}"
    )


def chrf_signature() -> str:
    """The signature of ``sacrebleu``'s default chrF, as :func:`sacrebleu_signature` is made."""
    return f"nrefs:1|case:mixed|eff:yes|nc:{CHRF_ORDER}|nw:0|space:no|version:lmforge-{__version__}"


def _char_ngrams(text: str) -> list[Counter]:
    # sacrebleu drops every whitespace character (space:no), tabs and newlines too.
    chars = "".join(text.split())
    return [Counter(chars[i : i + n] for i in range(len(chars) - n + 1)) for n in range(1, CHRF_ORDER + 1)]


def chrf_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF as ``sacrebleu.CHRF()`` computes it by default (chrF2: character 1-6-grams
    without whitespace, no word n-grams, beta 2), 0-1.

    Each order's matches and n-gram counts are summed over the corpus; precision and recall are
    averaged over the orders that both sides have (sacrebleu's "effective order", ``eff:yes``)
    and one F-beta is taken of the averages. That is not the mean of per-order F-scores
    (chrF++.py's and torchmetrics' ``CHRFScore``, sacrebleu's ``eps_smoothing=True``): the two
    differ by up to a few tenths of a point on real corpora. A prediction that matches nothing
    of its reference still counts the reference's n-grams, as sacrebleu counts them, and a
    reference too short for an order (a 3-letter reference has no 4-grams) leaves its
    prediction's n-grams of that order uncounted, as sacrebleu leaves them.
    Pure Python: torchmetrics' CHRFScore keeps every count as a torch scalar (24 s for 296
    docstring pairs on a 2-core machine, against milliseconds here).
    """
    matches, hyp_totals, ref_totals = ([0] * CHRF_ORDER for _ in range(3))
    for prediction, reference in zip(predictions, references, strict=True):
        for n, (hyp, ref) in enumerate(zip(_char_ngrams(prediction), _char_ngrams(reference), strict=True)):
            matches[n] += sum((hyp & ref).values())
            # sacrebleu counts no prediction n-gram of an order its reference is too short for.
            hyp_totals[n] += sum(hyp.values()) if ref else 0
            ref_totals[n] += sum(ref.values())
    precision, recall, orders = 0.0, 0.0, 0
    for match, hyp_total, ref_total in zip(matches, hyp_totals, ref_totals, strict=True):
        if hyp_total and ref_total:
            precision += match / hyp_total
            recall += match / ref_total
            orders += 1
    if not orders or not precision + recall:
        return 0.0
    precision, recall = precision / orders, recall / orders
    factor = CHRF_BETA**2
    return (1 + factor) * precision * recall / (factor * precision + recall)


def bleu_from_counts(
    matches: Sequence[float], totals: Sequence[float], pred_len: float, ref_len: float
) -> float:
    """Corpus BLEU, 0-1, from the n-gram counts summed over the corpus, as sacrebleu's default
    (``smooth:exp``, ``eff:no``) computes it: an order without any match gets precision
    ``1 / (2^k total)`` for the k-th such order, and a corpus with no match at all scores 0.
    torchmetrics' own ``SacreBLEUScore.compute`` scores 0 whenever one order has no match
    (sacrebleu's ``smooth:none``); where every order matches the two agree.
    """
    if not any(matches):
        return 0.0
    penalty = 1.0
    if pred_len < ref_len:
        penalty = math.exp(1 - ref_len / pred_len) if pred_len > 0 else 0.0
    logs = [_LOG_ZERO] * BLEU_ORDER
    smooth = 1.0
    for n in range(BLEU_ORDER):
        if totals[n] == 0:
            break
        if matches[n] == 0:
            smooth *= 2
            logs[n] = math.log(1.0 / (smooth * totals[n]))
        else:
            logs[n] = math.log(matches[n] / totals[n])
    return penalty * math.exp(sum(logs) / BLEU_ORDER)


def _bleu(predictions: list[str], references: list[str]) -> float:
    from torchmetrics.text import SacreBLEUScore

    counts = SacreBLEUScore(n_gram=BLEU_ORDER, tokenize="13a", lowercase=False)
    # sacrebleu strips each segment's trailing white space before tokenizing; 13a would
    # otherwise join a final "-\n" to nothing and drop the hyphen.
    counts.update(
        [prediction.rstrip() for prediction in predictions],
        [[reference.rstrip()] for reference in references],
    )
    return bleu_from_counts(
        counts.numerator.tolist(),
        counts.denominator.tolist(),
        float(counts.preds_len),
        float(counts.target_len),
    )


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measures (``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``), 0-1, from
    ``rouge_score.rouge_scorer.RougeScorer(ROUGE_KEYS, use_stemmer=True)``: texts lowercased,
    cut to ``[a-z0-9]`` words, words over 3 letters Porter-stemmed.

    ``rougeLsum`` takes the summary-level LCS over sentences separated by newlines, as
    rouge-score does; a text without newlines is one sentence, and its rougeLsum equals its
    rougeL. Hugging Face's summarization examples put a newline after every sentence with
    nltk's ``sent_tokenize`` first, which needs the ``punkt`` data downloaded: lmforge does
    not, so its rougeLsum matches theirs where the texts already hold one sentence a line.
    The mean is plain and deterministic; ``evaluate``'s ``rouge`` reports by default the
    median of 1,000 bootstrap means instead (``use_aggregator=True``, unseeded), which lies
    within sampling noise of it.
    """
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # (target, prediction)
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    return {key: total / max(len(predictions), 1) for key, total in totals.items()}


def score_texts(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | str]:
    """Score ``predictions[i]`` against ``references[i]`` (one reference each).

    Returns:

    - ``sacrebleu``: SacreBLEU's default corpus BLEU of detokenized, cased text (``13a``
      tokenizer, exponential smoothing), 0-100 as ``sacrebleu`` prints it, and
      ``sacrebleu_signature``, its signature (:func:`sacrebleu_signature`);
    - ``chrf``: SacreBLEU's default corpus chrF2 (:func:`chrf_score`), 0-100, and
      ``chrf_signature``;
    - ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``: mean ROUGE F-measures, 0-100, as
      ``rouge-score`` computes them with ``use_stemmer=True`` (:func:`rouge_scores`). ROUGE
      used to be torchmetrics' without a stemmer: figures recorded that way are not comparable
      with these (stemming matches more words, so they read higher now);
    - ``exact_match``: share of predictions equal to their reference after stripping outer
      whitespace, 0-1 (like accuracy);
    - ``mean_pred_words`` / ``mean_ref_words``: mean whitespace-separated words per text.
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "give one prediction per reference"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    scores: dict[str, float | str] = {
        "sacrebleu": _bleu(predictions, references) * PERCENT,
        "sacrebleu_signature": sacrebleu_signature(),
        "chrf": chrf_score(predictions, references) * PERCENT,
        "chrf_signature": chrf_signature(),
    }
    scores.update({key: value * PERCENT for key, value in rouge_scores(predictions, references).items()})
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
    ("rougeLsum", "ROUGE-Lsum"),
    ("exact_match", "exact match"),
    ("target_perplexity", "target perplexity"),
)


def format_scores(values: dict, digits: int = 2) -> str:
    """The text-to-text figures present in ``values``, e.g. ``BLEU 31.20, chrF 55.04``."""
    return ", ".join(f"{label} {values[key]:.{digits}f}" for key, label in SCORE_NAMES if key in values)
