"""Stage 2, prepare: clean, deduplicate and split the raw records into ``data/prepared/``.

Outputs: ``{train,val,test}.jsonl``, ``labels.json`` (the class names, index = class id; ``[]``
for text-to-text data, whose records carry ``target`` instead of a label, and for word-tagged
data) and ``cleaning.json`` (input rows, kept, dropped by reason, rows per split). Word-tagged
data (records with ``words`` and ``tags``) adds ``tags.json``: the train split's tag set in text
order (index = tag id); tags found only in val/test are listed in ``cleaning.json`` under
``unseen_tags`` with their word counts: no model can predict them, so they score as wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.errors import UserError
from lmforge.io import atomic_dir, read_jsonl, write_json


def label_names(labels: set) -> list:
    """Class names in a stable order: ints in numeric order when every label is an integer
    (``3`` or ``"3"``, since CSV/TSV labels arrive as text), else strings in text order.

    Classes are matched by ``str(label)`` downstream, so ``1`` and ``"1"`` are one class.
    """
    from lmforge.data.readers import normalize_labels

    names = normalize_labels(sorted({str(label) for label in labels}))
    return sorted(names) if all(isinstance(n, int) for n in names) else names


# More than this share of rows with no text means the text column is the wrong one, not that the
# data is a little dirty: stop and say so rather than train on what is left.
MOSTLY_EMPTY = 0.5


def check_mostly_empty(cfg: Config, summary: dict) -> None:
    empty, rows = summary["dropped"].get("empty", 0), summary["input_rows"]
    source = cfg.data.source
    where = source.path or source.name or source.url or source.kind
    if rows and empty / rows > MOSTLY_EMPTY:
        columns = ", ".join(source.text_columns)
        raise UserError(
            f"{where}: text column(s) {columns} are empty in {empty} of {rows} rows "
            f"({empty / rows:.0%}); point data.source.text_columns at the column(s) "
            "that hold the text"
        )
    empty = summary["dropped"].get("empty_target", 0)
    if rows and empty / rows > MOSTLY_EMPTY:
        column = source.target_column or f"the .{(source.parallel or ['', '?'])[1]} files"
        raise UserError(
            f"{where}: target {column} is empty in {empty} of {rows} rows "
            f"({empty / rows:.0%}); point data.source.target_column at the column "
            "that holds the target text"
        )


def run(cfg: Config) -> None:
    from tqdm import tqdm

    from lmforge.data.cleaning import SPLITS, CleaningReport, clean_and_split

    raw = Path(cfg.paths.raw) / "records.jsonl"
    if not raw.is_file():
        raise UserError(f"{raw} is missing; run the collect stage first (dvc repro collect)")
    total = json.loads((Path(cfg.paths.raw) / "meta.json").read_text())["records"]
    report = CleaningReport()
    labels_seen: dict[str, set[str]] = {name: set() for name in SPLITS}
    pairs = 0
    tag_counts: dict[str, Counter] = {name: Counter() for name in SPLITS}
    with atomic_dir(cfg.paths.prepared) as out, ExitStack() as files:
        handles = {
            name: files.enter_context(open(out / f"{name}.jsonl", "w", encoding="utf-8")) for name in SPLITS
        }
        records = tqdm(
            read_jsonl(raw),
            total=total,
            desc="prepare (clean, dedup, split)",
            unit=" records",
            mininterval=1.0,
            disable=None,
        )
        for split, record in clean_and_split(records, cfg.data.clean, cfg.data.split, report):
            handles[split].write(json.dumps(record, ensure_ascii=False) + "\n")
            if record.get("label") is not None:
                labels_seen[split].add(str(record["label"]))
            pairs += "target" in record
            if "tags" in record:
                tag_counts[split].update(record["tags"])
        report.check_balance()
        check_mostly_empty(cfg, report.as_dict())
        names = label_names(labels_seen["train"])
        if pairs and names:
            raise UserError(
                f"{raw}: records mix targets (text-to-text) and labels "
                "(classification); give data.source.target_column or "
                "data.source.label_column, not both"
            )
        if len(names) == 1:
            raise UserError(
                f"{raw}: the train split holds one class only ({names[0]!r}); "
                "a classifier needs at least two labels"
            )
        unseen = (labels_seen["val"] | labels_seen["test"]) - {str(n) for n in names}
        if unseen:
            raise UserError(
                f"{raw}: labels {sorted(unseen)} occur in val/test but not "
                "in train; add examples or raise data.split fractions"
            )
        write_json(out / "labels.json", names)
        summary = report.as_dict()
        if any(tag_counts.values()):
            tags = sorted(tag_counts["train"])
            if len(tags) < 2:
                raise UserError(
                    f"{raw}: the train split holds {len(tags)} tag(s) ({tags}); a "
                    "tagger needs at least two; check data.source.tags_column"
                )
            write_json(out / "tags.json", tags)
            unseen = {
                split: {t: n for t, n in sorted(tag_counts[split].items()) if t not in tag_counts["train"]}
                for split in ("val", "test")
            }
            summary["unseen_tags"] = unseen
            for split, counts in unseen.items():
                if counts:
                    print(
                        f"prepare: note: {split} has {sum(counts.values())} words tagged "
                        f"{sorted(counts)}, tag(s) absent from train: the model cannot predict "
                        "them, so they are scored as wrong (counted in the metrics)"
                    )
        write_json(out / "cleaning.json", summary)
    summary = report.as_dict()
    if any(tag_counts.values()):
        names = json.loads((Path(cfg.paths.prepared) / "tags.json").read_text())
    print(
        f"prepare: {summary['input_rows']} rows in = {summary['kept']} kept + "
        f"{summary['dropped_total']} dropped {summary['dropped']}; "
        f"splits {summary['per_split']}; "
        + (
            f"{pairs} source/target pairs"
            if pairs
            else f"{len(names)} tags"
            if any(tag_counts.values())
            else f"{len(names)} classes"
        )
    )


main = stage(run)

if __name__ == "__main__":
    main()
