"""Stage, prepare_corpus: clean the pretraining corpus, drop every text that is (or holds) one of
the task's val/test texts, deduplicate, and hold out a share for the pretraining validation loss.

Reads ``data/corpus/raw/`` and the task's ``data/prepared/{val,test}.jsonl``; writes
``data/corpus/prepared/``: ``train.jsonl`` and ``val.jsonl`` (``{"text", "source"}``) and
``cleaning.json`` (input rows, kept, dropped by reason, rows and words per split, how many task
texts were guarded). How a val/test text is recognised: :mod:`lmforge.data.corpus`.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, read_jsonl, write_json

CORPUS_SPLITS = ("train", "val")


def run(cfg: Config) -> None:
    from tqdm import tqdm

    from lmforge.data.cleaning import CleaningReport
    from lmforge.data.corpus import CorpusSplit, HoldoutIndex, clean_corpus, heldout_texts

    raw = Path(cfg.paths.corpus_raw)
    if not (raw / "meta.json").is_file():
        raise UserError(f"{raw / 'meta.json'} is missing; run the collect_corpus stage first")
    meta = json.loads((raw / "meta.json").read_text())
    if not cfg.corpus.enabled or not meta.get("enabled"):
        if cfg.corpus.enabled:
            raise UserError(f"{raw} holds no corpus; run the collect_corpus stage first")
        with atomic_dir(cfg.paths.corpus_prepared) as out:
            write_json(out / "meta.json", {"enabled": False})
        print("prepare_corpus: no corpus (corpus=none)")
        return
    corpus = cfg.corpus
    sources, targets = heldout_texts(Path(cfg.paths.prepared))
    holdout = HoldoutIndex(
        sources,
        corpus.holdout_min_words,
        targets=targets,
        target_min_words=corpus.holdout_target_min_words,
    )
    report = CleaningReport()
    words = dict.fromkeys(CORPUS_SPLITS, 0)
    with atomic_dir(cfg.paths.corpus_prepared) as out, ExitStack() as files:
        handles = {
            name: files.enter_context(open(out / f"{name}.jsonl", "w", encoding="utf-8"))
            for name in CORPUS_SPLITS
        }
        records = tqdm(
            read_jsonl(raw / "records.jsonl"),
            total=meta["records"],
            desc="prepare_corpus (clean, hold out val/test, dedup)",
            unit=" records",
            mininterval=1.0,
            disable=None,
        )
        split = CorpusSplit(corpus.val_fraction, corpus.seed)
        for name, record in clean_corpus(records, corpus.clean, holdout, split, report):
            handles[name].write(json.dumps(record, ensure_ascii=False) + "\n")
            words[name] += len(record["text"].split())
        report.check_balance()
        summary = report.as_dict()
        summary["per_split"] = {name: summary["per_split"][name] for name in CORPUS_SPLITS}
        summary["words"] = words
        summary["holdout"] = {
            "task_texts": holdout.texts,
            "matched_inside": holdout.contained,
            "min_words": corpus.holdout_min_words,
            "target_min_words": corpus.holdout_target_min_words,
            "dropped": sum(n for k, n in report.dropped.items() if k.startswith("holdout_")),
        }
        for name in CORPUS_SPLITS:
            if not summary["per_split"][name]:
                raise UserError(
                    f"{raw}: the corpus keeps {summary['kept']} records after cleaning and none "
                    f"falls in its {name} split; add text, or raise corpus.val_fraction"
                )
        write_json(out / "cleaning.json", summary)
        write_json(out / "meta.json", {"enabled": True, "source": meta["source"]})
    guarded = summary["holdout"]
    print(
        f"prepare_corpus: {summary['input_rows']} rows in = {summary['kept']} kept + "
        f"{summary['dropped_total']} dropped {summary['dropped']}; splits {summary['per_split']}, "
        f"words {words}; {guarded['dropped']} held out as equal to or holding one of the task's "
        f"{guarded['task_texts']} val/test texts"
    )


main = stage(run)

if __name__ == "__main__":
    main()
