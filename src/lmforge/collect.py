"""Stage 1, collect: gather raw text records from the configured source into ``data/raw/``.

Output: ``records.jsonl`` (one ``{"text", "label", "source"}`` object a line, source order;
text-to-text records carry ``target`` instead of a label) and ``meta.json`` (counts, the
source config, and what the records were collected for: :mod:`lmforge.data.provenance`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config, SourceConfig
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, input_path, write_json
from lmforge.core.task_registry import get_task
from lmforge.data.provenance import MADE_FOR, collected_for

# Evaluation splits are read first: when a text occurs in both, deduplication keeps the copy in
# the held-out split and drops the training one, so the test set stays as published.
SPLIT_ORDER = ("test", "val", "train")


def source_options(source: SourceConfig) -> tuple[str, dict]:
    """The reader kind and its keyword options for one source config."""
    options = asdict(source)
    kind = options.pop("kind")
    for key in ("max_records", "splits", "label_map"):
        options.pop(key)
    if options["path"] is not None:
        options["path"] = str(input_path(options["path"]))
    if kind == "stdlib":
        path, target = options["path"], source.target_column
        return kind, {"top_k": source.top_k, "stdlib_dir": path, "target_column": target}
    options.pop("top_k")
    if kind == "hf" and source.path:
        # A local copy replaces the hub: the same config runs offline with data.source.path=DIR.
        kind = "local"
        options.pop("name")
        options.pop("split")
    if kind == "url" and not options["cache_dir"]:
        options["cache_dir"] = str(Path.home() / ".cache" / "lmforge" / "downloads")
    options = {k: v for k, v in options.items() if v is not None}
    if source.target_column is not None or source.parallel is not None:
        # Text-to-text records have a target, not a label; the default label_column ("label")
        # names no column of such data. None (not absent) tells the reader: no label.
        options["label_column"] = None
    if is_tagged(source):
        options["label_column"] = None  # sentences carry a tag per word, no label
    return kind, options


def is_tagged(source: SourceConfig) -> bool:
    """Whether the source yields word-tagged sentences (a tag per word, no label)."""
    from lmforge.data.readers import TAGGED_FORMATS

    return source.tags_column is not None or source.format in TAGGED_FORMATS


def split_sources(source: SourceConfig) -> list[tuple[str | None, str, dict]]:
    """``(split, kind, options)`` for each read: one per predefined split, else one untagged."""
    kind, options = source_options(source)
    if not source.splits:
        return [(None, kind, options)]
    reads = []
    for split in SPLIT_ORDER:
        spec = dict(source.splits.get(split) or {})
        if split not in source.splits:
            continue
        merged = dict(options)
        file = spec.pop("file", None)
        hub_split = spec.pop("split", None)
        if kind != "hf":
            # Column overrides describe the files (GLUE's dev.tsv names its text `content`);
            # a hub dataset keeps one schema across its splits.
            merged.update({k: v for k, v in spec.items() if v is not None})
            if merged.get("target_column") is not None or merged.get("parallel") is not None:
                merged["label_column"] = None
            if merged.get("tags_column") is not None:
                merged["label_column"] = None
        if kind == "local":
            if file is None:
                raise UserError(
                    f"data.source.splits.{split}: give `file` (a path under "
                    f"data.source.path) to read this split from local files"
                )
            merged["path"] = str(input_path(source.path) / file)
        elif kind == "hf":
            merged["split"] = hub_split or split
        reads.append((split, kind, merged))
    return reads


def iter_source(source: SourceConfig):
    """Every record of the source, tagged with its predefined split where there is one."""
    from lmforge.data.sources import iter_records

    for split, kind, options in split_sources(source):
        for record in iter_records(kind, **options):
            yield record if split is None else {**record, "split": split}


def map_label(record: dict, label_map: dict) -> dict:
    """Apply ``data.source.label_map``; a label it does not name is an error naming the row."""
    label = record.get("label")
    if label is None:
        return record
    if str(label) not in label_map:
        known = ", ".join(sorted(map(str, label_map)))
        raise UserError(
            f"{record.get('source', '?')}: label {label!r} is not in data.source.label_map "
            f"({known}); add it to the map or remove the row"
        )
    return {**record, "label": label_map[str(label)]}


def run(cfg: Config) -> None:
    from tqdm import tqdm

    source = cfg.data.source
    records = iter_source(source)
    if source.max_records:
        records = itertools.islice(records, source.max_records)
    tally = get_task(cfg.task.name).collect_tally(cfg)
    with atomic_dir(cfg.paths.raw) as out:
        count = 0
        with open(out / "records.jsonl", "w", encoding="utf-8") as handle:
            for record in tqdm(
                records, desc=f"collect ({source.kind})", unit=" records", mininterval=1.0, disable=None
            ):
                if source.label_map is not None:
                    record = map_label(record, source.label_map)
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
                tally.add(record)
        if count == 0:
            raise UserError(
                f"data source '{source.kind}' ({source.path or source.name or ''}) "
                "yielded no records; point data.source.path at non-empty data"
            )
        meta = {
            "records": count,
            "labelled": tally.labelled,
            "source": asdict(source),
            **tally.meta(),
            MADE_FOR: collected_for(cfg),  # prepare checks it (lmforge.data.provenance)
        }
        write_json(out / "meta.json", meta)
    print(f"collect: {count} records ({tally.summary()}) -> {Path(cfg.paths.raw) / 'records.jsonl'}")


main = stage(run)

if __name__ == "__main__":
    main()
