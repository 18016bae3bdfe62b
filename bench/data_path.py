"""Data-path benchmark: the tokenize stage's encoding against bare ``Tokenizer.encode_batch``,
and peak memory of prepare + tokenize on a corpus and on one ten times larger.

    python bench/data_path.py [--json OUT]

Targets (issue 5): encode throughput >= 0.8x the bare call; peak RSS of the 10x corpus within
1.2x of the 1x corpus (streaming, not whole-corpus lists).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmforge.core.config import TokenizerConfig
from lmforge.data.sources import read_stdlib
from lmforge.data.tokenization import encode_to_shards, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def corpus(copies: int) -> list[dict]:
    base = [r for r in read_stdlib(top_k=10)]
    # Distinct suffixes keep deduplication from collapsing the copies.
    return [{**r, "text": f"{r['text']} (copy {i})"} for i in range(copies) for r in base]


def encode_throughput(records: list[dict], repeats: int = 3) -> dict:
    tokenizer = train_tokenizer((r["text"] for r in records), TokenizerConfig(vocab_size=4096))
    texts = [r["text"] for r in records]
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
            bare.append(tokens / (time.perf_counter() - start))
            start = time.perf_counter()
            stats = encode_to_shards(tokenizer, ((t, -1) for t in texts), Path(tmp), "train")
            ours.append(stats["tokens"] / (time.perf_counter() - start))
    return {
        "bare_tokens_per_s": max(bare),
        "lmforge_tokens_per_s": max(ours),
        "ratio": max(ours) / max(bare),
        "target": 0.8,
    }


def peak_rss_mb(workdir: Path, stage: str) -> float:
    """Peak RSS of one stage process, read by a small intermediate Python.

    Linux carries a process's RSS high-water mark across exec, so a stage forked straight from
    this (large) benchmark process would report this process's size, not its own.
    """
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "sys.exit(done.returncode) if done.returncode else "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            sys.executable,
            "-m",
            f"lmforge.{stage}",
            "hydra.run.dir=outputs/bench",
            "hydra.output_subdir=null",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"lmforge.{stage} failed in {workdir} (status {done.returncode})")
    return int(done.stdout.strip()) / 1024


def memory_scaling(records: list[dict], factor: int) -> dict:
    peaks = {}
    for copies in (1, factor):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "conf").symlink_to(ROOT / "conf")
            raw = work / "data/raw"
            raw.mkdir(parents=True)
            with open(raw / "records.jsonl", "w") as handle:
                for i in range(copies):
                    for r in records:
                        handle.write(json.dumps({**r, "text": f"{r['text']} (copy {i})"}) + "\n")
            (raw / "meta.json").write_text(json.dumps({"records": len(records) * copies}))
            peaks[copies] = {stage: peak_rss_mb(work, stage) for stage in ("prepare", "tokenize")}
    worst = max(peaks[factor][s] / peaks[1][s] for s in ("prepare", "tokenize"))
    return {"records_1x": len(records), "factor": factor, "peak_rss_mb": peaks, "ratio": worst, "target": 1.2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    records = corpus(1)
    encode = encode_throughput(corpus(3))
    memory = memory_scaling(records, args.factor)
    print(f"{'figure':<44}{'lmforge':>14}{'peer':>14}{'ratio':>8}{'target':>9}")
    print(
        f"{'encode tokens/s (tokenize stage vs encode_batch)':<44}"
        f"{encode['lmforge_tokens_per_s']:>14,.0f}{encode['bare_tokens_per_s']:>14,.0f}"
        f"{encode['ratio']:>8.2f}{'>= 0.8':>9}"
    )
    for stage in ("prepare", "tokenize"):
        small, large = memory["peak_rss_mb"][1][stage], memory["peak_rss_mb"][args.factor][stage]
        print(
            f"{f'peak RSS MB, {stage}: {args.factor}x corpus vs 1x':<44}{large:>14.1f}{small:>14.1f}"
            f"{large / small:>8.2f}{'<= 1.2':>9}"
        )
    if args.json:
        args.json.write_text(json.dumps({"encode": encode, "memory": memory}, indent=2))


if __name__ == "__main__":
    main()
