"""How much of each held-out split occurs verbatim inside the train split's text.

For phrase-level datasets such as SST-2 (every node of every parse tree is a training row), a
held-out phrase is usually a piece of a training sentence, so validation measures recall of the
training text rather than generalisation. Run after prepare::

    python bench/split_overlap.py data/prepared
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prepared", type=Path, nargs="?", default=Path("data/prepared"))
    args = ap.parse_args(argv)
    train = "\n".join(texts(args.prepared / "train.jsonl"))  # newline never occurs in a text
    for name in ("val", "test"):
        held_out = texts(args.prepared / f"{name}.jsonl")
        inside = sum(text in train for text in held_out)
        print(f"{name}: {inside} of {len(held_out)} texts ({100 * inside / max(1, len(held_out)):.1f} %) "
              "occur inside a train text")


if __name__ == "__main__":
    main()
