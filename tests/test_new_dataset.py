"""A labelled dataset the project never saw, in its own schema, end to end by overrides alone.

An AG-News-shaped CSV (``label,title,description``; labels 1-4 as in AG News) written here from a
seeded generator runs through every stage's command line with Hydra overrides only: two text
columns joined, integer labels mapped to classes, and the figures land where they always do.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

from conftest import run_cmd

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("collect", "prepare", "tokenize", "pretrain", "finetune", "evaluate")
TOPICS = {  # AG News' classes: 1 World, 2 Sports, 3 Business, 4 Sci/Tech
    1: "minister election summit border treaty embassy parliament refugees ceasefire diplomats",
    2: "match goal coach season striker playoff tournament league champion stadium",
    3: "shares profit merger investors quarterly earnings market bank revenue stocks",
    4: "software chip researchers internet launch satellite browser data genome processor",
}
FILLER = [
    "the",
    "a",
    "of",
    "in",
    "on",
    "after",
    "new",
    "says",
    "report",
    "week",
    "today",
    "its",
    "with",
    "over",
    "for",
    "as",
]


def phrase(rng: random.Random, words: list[str], other: list[str], n: int) -> str:
    picks = [rng.choice(words) for _ in range(n)] + [rng.choice(other)]
    picks += [rng.choice(FILLER) for _ in range(n)]
    rng.shuffle(picks)
    return " ".join(picks)


def news(rng: random.Random, rows: int) -> list[tuple[int, str, str]]:
    out = []
    for _ in range(rows):
        label = rng.randint(1, 4)
        words = TOPICS[label].split()
        # Some noise: a word from another topic, so the task is not a lookup.
        other = TOPICS[rng.choice([k for k in TOPICS if k != label])].split()
        out.append(
            (
                label,
                phrase(rng, words, other, 3).capitalize(),
                phrase(rng, words, other, 8).capitalize() + ".",
            )
        )
    return out


def write_csv(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "title", "description"])
        writer.writerows(rows)
    return path


@pytest.mark.slow
@pytest.mark.ci
def test_four_class_csv_in_its_own_schema_runs_end_to_end_with_overrides_only(tmp_path) -> None:
    rng = random.Random(0)
    data = write_csv(tmp_path / "news.csv", news(rng, 800))
    held_out = write_csv(tmp_path / "held_out.csv", news(random.Random(1), 120))
    work = tmp_path / "project"
    work.mkdir()
    (work / "conf").symlink_to(ROOT / "conf")
    overrides = [
        "experiment=tiny",
        f"logger.tracking_uri=sqlite:///{work}/mlflow.db",
        "data.source.kind=local",
        f"data.source.path={data}",
        "data.source.text_columns=[title,description]",
        "data.source.label_column=label",
        "data.clean.min_chars=5",
        "hydra.run.dir=outputs/run",
    ]
    for stage in STAGES:
        run_cmd(sys.executable, "-m", f"lmforge.{stage}", *overrides, cwd=work)
    # The held-out file, scored by the trained model through the same overrides.
    run_cmd(
        sys.executable,
        "-m",
        "lmforge.evaluate",
        *overrides,
        f"eval.file={held_out}",
        f"eval.output={work / 'held_out.json'}",
        cwd=work,
    )

    records = [json.loads(line) for line in (work / "data/raw/records.jsonl").open()]
    assert len(records) == 800
    # Both columns made it into the text, in order.
    first = next(csv.DictReader(data.open()))
    assert first["title"] in records[0]["text"] and first["description"] in records[0]["text"]
    labels = json.loads((work / "models/finetuned/config.json").read_text())["labels"]
    assert sorted(map(str, labels)) == ["1", "2", "3", "4"]
    for name in ("metrics/eval.json", "held_out.json"):
        figures = json.loads((work / name).read_text())
        assert sorted(figures["per_class"]) == ["1", "2", "3", "4"], name
        # Majority class is ~25% here; a model that learnt the topics is far above it.
        assert figures["accuracy"] > 0.6, (name, figures["accuracy"])
        assert 0 < figures["f1"] <= 1 and 0 < figures["precision"] <= 1, name
