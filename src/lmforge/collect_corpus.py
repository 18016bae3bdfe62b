"""Stage, collect_corpus: gather the unlabelled pretraining corpus (``corpus.source``) into
``data/corpus/raw/``.

Output: ``records.jsonl`` (one ``{"text", "source"}`` object a line, source order; only the text
columns are read, never a label) and ``meta.json`` (counts and the source config; for
``kind: docstrings`` every package with its pinned and installed version). With ``corpus=none``
(the default) it writes only ``meta.json`` saying so, and pretraining reads the task's train text.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, write_json


def run(cfg: Config) -> None:
    from tqdm import tqdm

    from lmforge.data.corpus import corpus_records
    from lmforge.data.docstrings import DocstringScan

    source = cfg.corpus.source
    if not cfg.corpus.enabled:
        with atomic_dir(cfg.paths.corpus_raw) as out:
            write_json(out / "meta.json", {"enabled": False})
        print("collect_corpus: no corpus (corpus=none); pretraining reads the task's train split")
        return
    started = time.perf_counter()
    scan = DocstringScan()
    records: Iterator[dict] = corpus_records(source, docstrings=scan)
    if source.max_records:
        records = itertools.islice(records, source.max_records)
    count = words = 0
    with atomic_dir(cfg.paths.corpus_raw) as out:
        with open(out / "records.jsonl", "w", encoding="utf-8") as handle:
            for record in tqdm(
                records,
                desc=f"collect_corpus ({source.kind})",
                unit=" records",
                mininterval=1.0,
                disable=None,
            ):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
                words += len(record["text"].split())
        where = source.path or source.name or source.url or source.kind
        if count == 0:
            raise UserError(
                f"corpus source '{source.kind}' ({where}) yielded no records; point corpus.source at text"
            )
        meta = {"enabled": True, "records": count, "words": words, "source": asdict(source)}
        if source.kind == "docstrings":
            meta["docstrings"] = {
                "lock_file": scan.lock_file,
                "files": scan.files,
                "unparsable": len(scan.unparsable),
                "not_installed": scan.not_installed,
                "version_mismatch": scan.version_mismatch,
                "packages": scan.packages,
            }
        write_json(out / "meta.json", meta)
    seconds = time.perf_counter() - started
    extra = ""
    if source.kind == "docstrings":
        extra = (
            f" from {len(scan.packages)} packages ({scan.files} files; "
            f"{len(scan.not_installed)} pinned but not installed)"
        )
        if scan.version_mismatch:
            extra += f"; version differs from the lock: {', '.join(scan.version_mismatch)}"
    print(
        f"collect_corpus: {count} records, {words} words{extra} in {seconds:.0f} s "
        f"-> {Path(cfg.paths.corpus_raw) / 'records.jsonl'}"
    )


main = stage(run)

if __name__ == "__main__":
    main()
