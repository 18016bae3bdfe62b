"""The payoff curve: a test figure against a pretraining budget, over the runs of a sweep.

A sweep (``dvc exp run --queue`` or a Hydra ``-m`` run) leaves one ``lmforge-evaluate`` run per
experiment in the MLflow store, each with the whole config as params. This command groups those
runs by one param (the budget, ``--x``), takes the mean and the sample standard deviation of
``--metric`` over each group's seeds, draws them, and files the figure, the table and the CSV in
MLflow as one run (experiment ``lmforge-payoff``)::

    python -m lmforge.payoff --x vectors.corpus_fraction --runs 'payoff-*' \\
        --scratch vectors.enabled=false --out plots/payoff

``--runs`` picks runs by DVC experiment name (a glob over the ``lmforge.dvc_experiment`` tag),
``--where KEY=VALUE`` by param; ``--scratch KEY=VALUE`` marks the from-scratch arm, drawn as a
band across the plot and listed first. A seed run twice counts once (its latest run).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError

SCRATCH = "scratch"


@dataclass
class Point:
    """One budget (or the scratch arm): its runs' figures by seed."""

    x: str
    by_seed: dict[str, float] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [self.by_seed[seed] for seed in sorted(self.by_seed, key=_number_or_text)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan


def _number_or_text(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: give KEY=VALUE, e.g. {flag} vectors.enabled=false")
        pairs[key] = value
    return pairs


def collect_points(
    runs: list[Any], x: str, metric: str, scratch: dict[str, str], seed_key: str = "seed"
) -> list[Point]:
    """Group finished runs (MLflow ``Run`` objects, newest first) into points: the scratch arm,
    then each value of param ``x`` in numeric order. A (point, seed) pair keeps its newest run."""
    points: dict[str, Point] = {}
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        if metric not in metrics:
            continue
        is_scratch = bool(scratch) and all(params.get(k) == v for k, v in scratch.items())
        if not is_scratch and x not in params:
            continue
        key = SCRATCH if is_scratch else params[x]
        point = points.setdefault(key, Point(key))
        seed = params.get(seed_key, "?")
        if seed not in point.by_seed:  # newest first: an earlier run of the same seed is older
            point.by_seed[seed] = float(metrics[metric])
            point.run_ids.append(run.info.run_id)
    ordered = sorted((p for k, p in points.items() if k != SCRATCH), key=lambda p: _number_or_text(p.x))
    return ([points[SCRATCH]] if SCRATCH in points else []) + ordered


def markdown_table(points: list[Point], x: str, metric: str, scale: float) -> str:
    lines = [
        f"| {x} | seeds | {metric} per seed | mean ± sd | vs scratch |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = next((p.mean for p in points if p.x == SCRATCH), None)
    for p in points:
        values = " / ".join(f"{v * scale:.2f}" for v in p.values)
        spread = "" if math.isnan(p.sd) else f" ± {p.sd * scale:.2f}"
        gain = "" if base is None or p.x == SCRATCH else f"{(p.mean - base) * scale:+.2f}"
        label = "from scratch" if p.x == SCRATCH else p.x
        lines.append(f"| {label} | {len(p.values)} | {values} | {p.mean * scale:.2f}{spread} | {gain} |")
    return "\n".join(lines) + "\n"


def write_csv(points: list[Point], path: Path, scale: float) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "seeds", "mean", "sd", "values", "run_ids"])
        for p in points:
            writer.writerow(
                [
                    p.x,
                    len(p.values),
                    round(p.mean * scale, 4),
                    "" if math.isnan(p.sd) else round(p.sd * scale, 4),
                    " ".join(f"{v * scale:.4f}" for v in p.values),
                    " ".join(p.run_ids),
                ]
            )


def plot(
    points: list[Point], path: Path, x: str, metric: str, scale: float, title: str, xlabel: str | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = [p for p in points if p.x != SCRATCH]
    if not budget:
        raise UserError(f"no run has param {x}: nothing to draw")
    numeric = all(_number_or_text(p.x)[0] == 0 for p in budget)
    xs = [float(p.x) if numeric else i for i, p in enumerate(budget)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for scratch in (p for p in points if p.x == SCRATCH):
        sd = 0.0 if math.isnan(scratch.sd) else scratch.sd
        band = f"from scratch, mean ± sd (n={len(scratch.values)})"
        ax.axhspan((scratch.mean - sd) * scale, (scratch.mean + sd) * scale, color="0.85", label=band)
        ax.axhline(scratch.mean * scale, color="0.45", linewidth=1)
    ax.errorbar(
        xs,
        [p.mean * scale for p in budget],
        yerr=[0 if math.isnan(p.sd) else p.sd * scale for p in budget],
        marker="o",
        capsize=4,
        label="pretrained, mean ± sd",
    )
    for xv, p in zip(xs, budget, strict=True):
        ax.scatter([xv] * len(p.values), [v * scale for v in p.values], s=12, color="C0", alpha=0.4)
    if not numeric:
        ax.set_xticks(xs, [p.x for p in budget])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(metric + (" (%)" if scale == 100 else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmforge.payoff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--x", required=True, help="the budget param, e.g. vectors.corpus_fraction")
    parser.add_argument("--metric", default="test_accuracy", help="evaluate metric (default test_accuracy)")
    parser.add_argument("--runs", help="DVC experiment names to keep, a glob (e.g. 'payoff-*')")
    parser.add_argument("--where", action="append", default=[], help="KEY=VALUE a param must equal")
    parser.add_argument("--scratch", action="append", default=[], help="KEY=VALUE marking scratch runs")
    parser.add_argument("--experiment", default="lmforge-evaluate", help="MLflow experiment of the runs")
    parser.add_argument("--tracking-uri", help="store (default: the project's, as every stage)")
    parser.add_argument("--out", default="plots/payoff", help="folder for payoff.png/.csv/.md")
    parser.add_argument("--percent", action="store_true", help="show the metric ×100")
    parser.add_argument("--title", default="Payoff of pretraining")
    parser.add_argument("--xlabel", help="the x axis's label (default: the --x param)")
    parser.add_argument("--no-log", action="store_true", help="write the files only, no MLflow run")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import mlflow

    from lmforge.tracking.runs import DVC_EXPERIMENT_TAG, ensure_experiment, store_root

    uri = args.tracking_uri or f"sqlite:///{store_root() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    where, scratch = _pairs(args.where, "--where"), _pairs(args.scratch, "--scratch")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise UserError(f"{uri} has no experiment {args.experiment}; run the sweep first")
    runs = [
        r
        for r in client.search_runs(
            [experiment.experiment_id],
            "attributes.status = 'FINISHED'",
            max_results=50000,
            order_by=["attributes.start_time DESC"],
        )
        if all(r.data.params.get(k) == v for k, v in where.items())
        and (args.runs is None or fnmatch.fnmatch(r.data.tags.get(DVC_EXPERIMENT_TAG, ""), args.runs))
    ]
    points = collect_points(runs, args.x, args.metric, scratch)
    if not points:
        raise UserError(
            f"no finished run in {args.experiment} has {args.metric} and param {args.x}"
            + (f" among DVC experiments {args.runs!r}" if args.runs else "")
        )
    scale = 100.0 if args.percent else 1.0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(points, args.x, args.metric, scale)
    (out / "payoff.md").write_text(table)
    write_csv(points, out / "payoff.csv", scale)
    plot(points, out / "payoff.png", args.x, args.metric, scale, args.title, args.xlabel)
    print(table, end="")
    print(f"payoff: {sum(len(p.values) for p in points)} runs -> {out}/payoff.png, payoff.csv, payoff.md")
    if not args.no_log:
        experiment_id = ensure_experiment("lmforge-payoff")
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"payoff-{args.x}") as run:
            mlflow.log_params(
                {
                    "x": args.x,
                    "metric": args.metric,
                    "runs": args.runs or "*",
                    "where": " ".join(args.where),
                    "scratch": " ".join(args.scratch),
                }
            )
            for p in points:
                name = "scratch" if p.x == SCRATCH else p.x
                mlflow.log_metric(f"mean.{name}", p.mean * scale)
                if not math.isnan(p.sd):
                    mlflow.log_metric(f"sd.{name}", p.sd * scale)
            mlflow.set_tag("lmforge.payoff.run_ids", " ".join(i for p in points for i in p.run_ids)[:5000])
            for name in ("payoff.png", "payoff.csv", "payoff.md"):
                mlflow.log_artifact(str(out / name))
        print(f"payoff: MLflow run {run.info.run_id} in lmforge-payoff ({uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
