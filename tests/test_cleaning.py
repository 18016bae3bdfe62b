"""Cleaning, deduplication and the split: counts always balance, the split is deterministic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.core.config import CleanConfig, SplitConfig
from lmforge.data.cleaning import CleaningReport, assign_split, clean_and_split, normalize_text

CLEAN = CleanConfig(min_chars=3)
SPLIT = SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0)


def run(records: list[dict]) -> tuple[list[tuple[str, dict]], CleaningReport]:
    report = CleaningReport()
    kept = list(clean_and_split(records, CLEAN, SPLIT, report))
    return kept, report


def test_normalisation_collapses_whitespace_and_unicode_forms() -> None:
    assert normalize_text("  a\u00a0b\t\n c\x07 ", CLEAN) == "a b c"
    assert normalize_text("\ufb01le", CLEAN) == "file"  # NFKC folds the ligature


def test_drops_are_counted_by_reason() -> None:
    records = [
        {"text": "hello world"},
        {"text": "hello   world"},
        {"text": "  "},
        {"text": None},
        {"text": "ab"},
        {"text": "x" * 30_000},
        {"text": "another one"},
    ]
    kept, report = run(records)
    assert [r["text"] for _, r in kept] == ["hello world", "another one"]
    assert dict(report.dropped) == {"duplicate": 1, "empty": 2, "too_short": 1, "too_long": 1}
    assert report.input_rows == 7 == report.kept + sum(report.dropped.values())
    report.check_balance()


def test_split_depends_on_text_and_seed_only() -> None:
    texts = [f"document number {i}" for i in range(2000)]
    first = [assign_split(t, SPLIT) for t in texts]
    assert first == [assign_split(t, SPLIT) for t in reversed(texts)][::-1]
    shares = {name: first.count(name) / len(first) for name in ("train", "val", "test")}
    assert abs(shares["val"] - 0.2) < 0.04 and abs(shares["test"] - 0.2) < 0.04
    other = [assign_split(t, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=1)) for t in texts]
    assert other != first


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=60))
def test_input_rows_always_equal_kept_plus_dropped(texts: list) -> None:
    kept, report = run([{"text": t, "label": None} for t in texts])
    assert report.input_rows == len(texts)
    assert report.kept == len(kept)
    assert report.input_rows == report.kept + sum(report.dropped.values())
    survivors = [r["text"] for _, r in kept]
    assert len(survivors) == len(set(survivors)), "duplicates survived"
    assert all(len(t) >= CLEAN.min_chars and t == t.strip() for t in survivors)


def test_phrases_follow_their_sentence_into_its_split() -> None:
    from lmforge.data.cleaning import group_substrings

    texts = [
        "a gripping , funny film",
        "gripping , funny",
        "funny",
        "a dull film",
        "dull film",
        "film",
        "funniest",
    ]
    own = ["val", "train", "test", "train", "val", "val", "val"]
    splits = dict(zip(texts, group_substrings(texts, own), strict=True))
    # Roots (inside no longer text) keep their own split; their pieces follow them.
    assert splits["a gripping , funny film"] == "val" and splits["a dull film"] == "train"
    assert splits["gripping , funny"] == "val" and splits["funny"] == "val"
    assert splits["dull film"] == "train"
    # Inside a val root and a train root: train, or validation would hold a piece of training text.
    assert splits["film"] == "train"
    # Containment is by whole words: "funniest" is no piece of anything, so keeps its own split.
    assert splits["funniest"] == "val"
    reordered = texts[::-1]
    again = dict(zip(reordered, group_substrings(reordered, own[::-1]), strict=True))
    assert again == splits


def test_grouped_split_leaves_given_splits_alone_and_still_balances() -> None:
    records = [
        {"text": "the plot is thin", "label": 0, "split": "train"},
        {"text": "plot is thin", "label": 0, "split": "train"},
        {"text": "thin", "label": 0, "split": "train"},
        {"text": "the plot is thin", "label": 0, "split": "train"},
        {"text": "is thin", "label": 1, "split": "test"},
    ]
    drawn = set()
    for seed in range(8):  # ungrouped, three texts at val_fraction 0.5 rarely agree 8 times
        report = CleaningReport()
        cfg = SplitConfig(val_fraction=0.5, test_fraction=0.1, seed=seed, group_substrings=True)
        names = {
            (r["text"], r.get("split")): name for name, r in clean_and_split(records, CLEAN, cfg, report)
        }
        # The given test row stays test, though it is a piece of a train text; the train rows
        # form one group, whatever its root drew.
        assert names[("is thin", "test")] == "test"
        group = {names[(t, "train")] for t in ("the plot is thin", "plot is thin", "thin")}
        assert len(group) == 1, (seed, names)
        drawn |= group
        assert report.kept == 4 and dict(report.dropped) == {"duplicate": 1}
        report.check_balance()
    assert drawn == {"train", "val"}
