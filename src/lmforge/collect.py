"""Stage 1, collect: gather raw text records from the configured source into ``data/raw/``.

Output: ``records.jsonl`` (one ``{"text", "label", "source"}`` object a line, source order) and
``meta.json`` (counts and the source config).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path

from lmforge.cli import stage
from lmforge.config import Config, SourceConfig
from lmforge.errors import UserError
from lmforge.io import atomic_dir, write_json


def source_options(source: SourceConfig) -> dict:
    options = asdict(source)
    kind = options.pop("kind")
    options.pop("max_records")
    options.pop("label_map")
    if kind == "stdlib":
        return {"top_k": source.top_k, "stdlib_dir": source.path}
    options.pop("top_k")
    if kind == "url" and not options["cache_dir"]:
        options["cache_dir"] = str(Path.home() / ".cache" / "lmforge" / "downloads")
    return {k: v for k, v in options.items() if v is not None}


def map_label(record: dict, label_map: dict) -> dict:
    """Apply ``data.source.label_map``; a label it does not name is an error naming the row."""
    label = record.get("label")
    if label is None:
        return record
    if str(label) not in label_map:
        known = ", ".join(sorted(map(str, label_map)))
        raise UserError(f"{record.get('source', '?')}: label {label!r} is not in data.source.label_map "
                        f"({known}); add it to the map or remove the row")
    return {**record, "label": label_map[str(label)]}


def run(cfg: Config) -> None:
    from tqdm import tqdm

    from lmforge.data.sources import iter_records

    source = cfg.data.source
    records = iter_records(source.kind, **source_options(source))
    if source.max_records:
        records = itertools.islice(records, source.max_records)
    labelled = 0
    with atomic_dir(cfg.paths.raw) as out:
        count = 0
        with open(out / "records.jsonl", "w", encoding="utf-8") as handle:
            for record in tqdm(records, desc=f"collect ({source.kind})", unit=" records",
                               mininterval=1.0, disable=None):
                if source.label_map is not None:
                    record = map_label(record, source.label_map)
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
                labelled += record.get("label") is not None
        if count == 0:
            raise UserError(f"data source '{source.kind}' ({source.path or source.name or ''}) "
                            "yielded no records; point data.source.path at non-empty data")
        write_json(out / "meta.json", {"records": count, "labelled": labelled,
                                       "source": asdict(source)})
    print(f"collect: {count} records ({labelled} labelled) -> {Path(cfg.paths.raw) / 'records.jsonl'}")


main = stage(run)

if __name__ == "__main__":
    main()
