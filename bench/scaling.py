"""Scaling benchmark: wall time and peak memory of collect -> prepare -> tokenize on 1x, 10x and
100x the IMDB reviews (../shared/data/imdb/reviews.csv, 50,000 reviews, 66 MB).

    python bench/scaling.py [--scales 1,10,100] [--json OUT] [--keep] [--imdb CSV]
                            [--workdir DIR] [--override KEY=VALUE ...]

Each scale writes an Nx copy of the csv into a temporary folder (copy 0 is the corpus as
published; copy i >= 1 has " [copy i]" appended to every review, so deduplication keeps it) and
runs the real stages there as subprocesses, as a user would on a large labelled corpus:
``python -m lmforge.{collect,prepare,tokenize} data.source.kind=local data.source.path=<csv>
data.source.format=csv data.source.text_columns=[review] data.source.label_column=sentiment``.
Fractions (``--scales 0.1``) take the first share of the rows, for quick checks.

Per stage it records wall time (the process, Python and Hydra start-up included) and the stage's
peak resident set size (``ru_maxrss`` of the stage process, read by a small intermediate Python:
Linux carries the RSS high-water mark across exec, so a stage forked from this process would
report this process's size). A stage's input is deleted once the next stage has read it (the
csv after collect, ``data/raw`` after prepare), and the whole folder after each scale unless
``--keep``: 100x is a 6.6 GB csv, and the stages' outputs are about as large again each.

Target (issue 17): time linear in the corpus size (time / 1x time close to the scale), peak RSS
flat (the same at every scale, within noise).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMDB = ROOT.parent / "shared" / "data" / "imdb" / "reviews.csv"
STAGES = ("collect", "prepare", "tokenize")
# Disk per 1x: the csv (66 MB), data/raw (~80 MB), data/prepared (~75 MB), shards (~35 MB); with
# each input deleted after use at most two of them exist at once.
DISK_PER_1X = 200 * 2**20

# Runs the stage, then prints the peak RSS (KiB on Linux) of its child, the stage.
PROBE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:])\n"
    "print('maxrss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(done.returncode)\n"
)


def scale_label(scale: float) -> str:
    return f"{scale:g}x"


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def write_scaled(header: list[str], rows: list[list[str]], scale: float, out: Path) -> int:
    """Write ``scale`` copies of ``rows`` (review text made distinct per copy); return the rows."""
    text = header.index("review")
    copies = math.ceil(scale)
    last = len(rows) if scale == copies else round(len(rows) * (scale - copies + 1))
    written = 0
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for copy in range(copies):
            part = rows if copy < copies - 1 else rows[:last]
            for row in part:
                if copy:
                    row = [*row]
                    row[text] = f"{row[text]} [copy {copy}]"
                writer.writerow(row)
            written += len(part)
    return written


def run_stage(workdir: Path, stage: str, overrides: list[str], log: Path) -> dict:
    command = [
        sys.executable,
        "-c",
        PROBE,
        sys.executable,
        "-m",
        f"lmforge.{stage}",
        "hydra.run.dir=outputs/bench",
        "hydra.output_subdir=null",
        *overrides,
    ]
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(
            command,
            cwd=workdir,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"},
        )
    seconds = time.perf_counter() - start
    lines = log.read_text().splitlines()
    if done.returncode != 0:
        tail = "\n".join(lines[-15:])
        raise SystemExit(f"lmforge.{stage} failed (status {done.returncode}); log {log}:\n{tail}")
    peak = [int(line.split()[1]) for line in lines if line.startswith("maxrss_kib ")]
    summary = [line for line in lines if line.startswith(f"{stage}:")]
    return {"seconds": seconds, "peak_rss_mb": peak[-1] / 1024, "summary": summary[-1] if summary else ""}


def free_bytes(folder: Path) -> int:
    usage = shutil.disk_usage(folder)
    return usage.free


def run_scale(
    header: list[str], rows: list[list[str]], scale: float, base: Path, overrides: list[str], keep: bool
) -> dict:
    need = DISK_PER_1X * scale
    if free_bytes(base) < need:
        raise SystemExit(
            f"{scale_label(scale)}: {base} has {free_bytes(base) / 2**30:.1f} GiB free, the run "
            f"needs about {need / 2**30:.1f} GiB; pass --workdir on a larger disk"
        )
    work = Path(tempfile.mkdtemp(prefix=f"lmforge-scaling-{scale_label(scale)}-", dir=base))
    try:
        (work / "conf").symlink_to(ROOT / "conf")
        csv_path = work / "reviews.csv"
        start = time.perf_counter()
        records = write_scaled(header, rows, scale, csv_path)
        build = time.perf_counter() - start
        source = [
            "data.source.kind=local",
            f"data.source.path={csv_path}",
            "data.source.format=csv",
            "data.source.text_columns=[review]",
            "data.source.label_column=sentiment",
            *overrides,
        ]
        stages = {}
        for stage in STAGES:
            stages[stage] = run_stage(work, stage, source, work / f"{stage}.log")
            print(
                f"  {scale_label(scale)} {stage}: {stages[stage]['seconds']:.1f} s, "
                f"peak RSS {stages[stage]['peak_rss_mb']:.0f} MB  {stages[stage]['summary']}",
                flush=True,
            )
            if not keep:  # what the next stage no longer reads
                if stage == "collect":
                    csv_path.unlink()
                elif stage == "prepare":
                    shutil.rmtree(work / "data" / "raw")
        meta = json.loads((work / "data" / "shards" / "meta.json").read_text())
        tokens = sum(split["tokens"] for split in meta["splits"].values())
        kept = sum(split["records"] for split in meta["splits"].values())
        return {
            "scale": scale,
            "input_rows": records,
            "kept_records": kept,
            "tokens": tokens,
            "build_input_seconds": build,
            "stages": stages,
            "seconds": sum(s["seconds"] for s in stages.values()),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
            "workdir": str(work) if keep else None,
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def table(results: list[dict]) -> str:
    """The markdown table: per scale, total and per-stage time (and its ratio to the smallest
    scale's, per unit of scale) and peak RSS."""
    base = results[0]
    lines = [
        "| scale | reviews | tokens | time | time / "
        + scale_label(base["scale"])
        + " time | peak RSS | "
        + " | ".join(f"{s} time / peak RSS" for s in STAGES)
        + " |",
        "| --- " * (6 + len(STAGES)) + "|",
    ]
    for r in results:
        ratio = r["seconds"] / base["seconds"]
        cells = [
            scale_label(r["scale"]),
            f"{r['input_rows']:,}",
            f"{r['tokens']:,}",
            f"{r['seconds']:.0f} s",
            f"{ratio:.2f} (scale {r['scale'] / base['scale']:g})",
            f"{r['peak_rss_mb']:.0f} MB",
            *(f"{r['stages'][s]['seconds']:.0f} s / {r['stages'][s]['peak_rss_mb']:.0f} MB" for s in STAGES),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10,100", help="comma-separated multiples (fractions allowed)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep each scale's folder and stage inputs")
    parser.add_argument(
        "--imdb", type=Path, default=DEFAULT_IMDB, help=f"the reviews csv (default {DEFAULT_IMDB})"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where scales run")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override (repeatable)",
    )
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    if not scales or any(s <= 0 for s in scales):
        raise SystemExit(f"--scales {args.scales!r}: give positive multiples, e.g. 1,10,100")
    if not args.imdb.is_file():
        print(
            f"skipped: {args.imdb} is absent (the IMDB reviews of ../shared/data/imdb, see its README); "
            "pass --imdb PATH to the reviews csv",
            file=sys.stderr,
        )
        return
    header, rows = read_rows(args.imdb)
    print(
        f"scaling benchmark: {len(rows):,} reviews from {args.imdb}, "
        f"scales {', '.join(map(scale_label, scales))}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = [run_scale(header, rows, s, args.workdir, args.override, args.keep) for s in scales]
    print()
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "imdb": str(args.imdb),
                    "overrides": args.override,
                    "cpus": os.cpu_count(),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
