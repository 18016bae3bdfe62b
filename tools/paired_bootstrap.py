"""How sure is a text-to-text system's lead over the retrieval baseline? A paired bootstrap.

Scores ROUGE-L per test pair for the predictions of one or more evaluate runs
(``plots/eval/samples.csv``) and for the retrieval baseline (the summary of the nearest training
source by TF-IDF, from the ``baselines`` stage's own code), then resamples the test pairs with
replacement and reports the mean difference with its 95 % interval:

    python tools/paired_bootstrap.py data/prepared run0/samples.csv run1/samples.csv

Run it from the project root after ``dvc exp run -S experiment=docsum`` (copy each seed's
``plots/eval/samples.csv`` aside first). Needs the project installed (``lmforge``,
torchmetrics).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def rouge_l(predictions: list[str], references: list[str]) -> np.ndarray:
    from torchmetrics.functional.text import rouge_score

    return np.array(
        [
            100 * float(rouge_score(p, r, rouge_keys="rougeL")["rougeL_fmeasure"])
            for p, r in zip(predictions, references, strict=True)
        ]
    )


def main() -> None:
    from lmforge.tasks.text2text.stages import text_to_text_predictions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="the prepared data folder (train.jsonl, test.jsonl)")
    parser.add_argument("samples", type=Path, nargs="+", help="an evaluate run's plots/eval/samples.csv")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    predictions, references = text_to_text_predictions(args.prepared)
    retrieved = predictions["retrieval"]
    baseline = rouge_l(retrieved, references)
    rng = np.random.default_rng(args.seed)
    print(f"retrieval baseline: ROUGE-L {baseline.mean():.2f} on {len(references)} test pairs")
    for path in args.samples:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if [r["reference"] for r in rows] != references:
            raise SystemExit(f"{path}: its references are not {args.prepared}/test.jsonl's, in order")
        system = rouge_l([r["prediction"] for r in rows], references)
        diff = system - baseline
        means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(args.resamples)])
        low, high = np.percentile(means, [2.5, 97.5])
        same = sum(r["prediction"] == t for r, t in zip(rows, retrieved, strict=True))
        print(
            f"{path}: ROUGE-L {system.mean():.2f}, {diff.mean():+.2f} over retrieval "
            f"(95 % interval [{low:+.2f}, {high:+.2f}]); better on {int((diff > 0).sum())} pairs, "
            f"worse on {int((diff < 0).sum())}, the same output as retrieval on {same}"
        )


if __name__ == "__main__":
    main()
