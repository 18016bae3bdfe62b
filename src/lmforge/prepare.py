"""Stage 2, prepare: clean, deduplicate and split the raw records into ``data/prepared/``.

Outputs: ``{train,val,test}.jsonl``, ``labels.json`` (the class names, index = class id; ``[]``
for records without labels), ``cleaning.json`` (input rows, kept, dropped by reason, rows per
split) and ``meta.json`` (what it was made for: :mod:`lmforge.data.provenance`). The task
(``task.name``; :meth:`lmforge.tasks.base.Task.prepare_tally`) counts and checks what its
records hold besides, and may write files of its own (a tagger's ``tags.json``).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, read_jsonl, write_json
from lmforge.core.task_registry import get_task
from lmforge.data.provenance import MADE_FOR, PREPARED_META, check_raw, prepared_for


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
    check_raw(cfg)  # collected for this task and source, not left by another run
    total = json.loads((Path(cfg.paths.raw) / "meta.json").read_text())["records"]
    made_for = prepared_for(cfg)
    report = CleaningReport()
    labels_seen: dict[str, set[str]] = {name: set() for name in SPLITS}
    tally = get_task(cfg.task.name).prepare_tally(cfg)
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
            tally.add(split, record)
        report.check_balance()
        check_mostly_empty(cfg, report.as_dict())
        names = label_names(labels_seen["train"])
        tally.check(raw, names)
        unseen = (labels_seen["val"] | labels_seen["test"]) - {str(n) for n in names}
        if unseen:
            raise UserError(
                f"{raw}: labels {sorted(unseen)} occur in val/test but not "
                "in train; add examples or raise data.split fractions"
            )
        write_json(out / "labels.json", names)
        summary = report.as_dict()
        what = tally.finish(raw, out, names, summary)
        write_json(out / "cleaning.json", summary)
        write_json(out / PREPARED_META, {MADE_FOR: made_for})  # tokenize checks it
    summary = report.as_dict()
    print(
        f"prepare: {summary['input_rows']} rows in = {summary['kept']} kept + "
        f"{summary['dropped_total']} dropped {summary['dropped']}; "
        f"splits {summary['per_split']}; " + what
    )


main = stage(run)

if __name__ == "__main__":
    main()
