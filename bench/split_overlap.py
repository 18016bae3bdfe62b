"""How much of each held-out split occurs verbatim, as whole words, inside the train split's text.

For phrase-level datasets such as SST-2 (every node of every parse tree is a training row), a
held-out phrase is usually a piece of a training sentence, so validation measures recall of the
training text rather than generalisation. Run after prepare::

    python bench/split_overlap.py data/prepared
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def texts(path: Path) -> list[str]:
    from lmforge.core.io import read_jsonl

    return [record["text"] for record in read_jsonl(path)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prepared", type=Path, nargs="?", default=Path("data/prepared"))
    args = ap.parse_args(argv)
    # Space-padded, so that a text is found only as whole words ("good" is not inside "goodness"),
    # as data.split.group_substrings matches; a newline never occurs in a text.
    train = "\n".join(f" {text} " for text in texts(args.prepared / "train.jsonl"))
    for name in ("val", "test"):
        held_out = texts(args.prepared / f"{name}.jsonl")
        inside = sum(f" {text} " in train for text in held_out)
        print(
            f"{name}: {inside} of {len(held_out)} texts ({100 * inside / max(1, len(held_out)):.1f} %) "
            "occur inside a train text, as whole words"
        )


if __name__ == "__main__":
    main()
