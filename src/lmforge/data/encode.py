"""Writing ``data/shards`` for the tokenize stage: each record's text with its label id (and a
target's tokens, for tasks whose records carry one), and the pretraining corpus beside them.
Tasks call these from :meth:`lmforge.tasks.base.Task.write_shards`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, read_jsonl, write_json


def write_text_shards(
    cfg: Any,
    tokenizer: Any,
    prepared: Path,
    specials: dict,
    checkpoint: dict | None,
    targets: bool = False,
    augment: Callable[[str, list[dict]], list[dict]] | None = None,
    texts: Callable[[dict], list[str]] | None = None,
) -> None:
    """Every split's texts with their label ids (-1: none) as shards, ``targets``: each record's
    ``target`` too (target shards); ``augment(split, records)`` rewrites the records first;
    ``texts``: what of a task train record the corpus shards read (``corpus.include_task_train``)."""
    from tqdm import tqdm

    from lmforge.data.cleaning import SPLITS
    from lmforge.data.tokenization import encode_targets_to_shards, encode_to_shards, ids_dtype

    counts = json.loads((prepared / "cleaning.json").read_text())["per_split"]
    names = json.loads((prepared / "labels.json").read_text())
    index = {str(name): i for i, name in enumerate(names)}

    def pairs(split: str):
        records = read_jsonl(prepared / f"{split}.jsonl")
        if augment is not None:
            records = augment(split, list(records))
        for record in records:
            label = record.get("label")
            yield record["text"], (-1 if label is None else index[str(label)])

    with atomic_dir(cfg.paths.shards) as out:
        stats = {}
        for split in SPLITS:
            with tqdm(
                total=counts[split], desc=f"encode ({split})", unit=" records", mininterval=1.0, disable=None
            ) as bar:
                stats[split] = encode_to_shards(tokenizer, pairs(split), out, split, progress=bar)
            if targets:
                with tqdm(
                    total=counts[split],
                    desc=f"encode ({split} targets)",
                    unit=" records",
                    mininterval=1.0,
                    disable=None,
                ) as bar:
                    stats[split].update(
                        encode_targets_to_shards(
                            tokenizer,
                            (r["target"] for r in read_jsonl(prepared / f"{split}.jsonl")),
                            out,
                            split,
                            progress=bar,
                        )
                    )
        vocab = tokenizer.get_vocab_size()
        meta = {
            "vocab_size": vocab,
            "dtype": ids_dtype(vocab).name,
            "special_ids": specials,
            "labels": names,
            "splits": stats,
            "tokenizer": checkpoint or asdict(cfg.tokenizer),
        }
        if targets:
            meta["targets"] = True
        if cfg.corpus.enabled:
            meta["corpus"] = write_corpus_shards(cfg, tokenizer, prepared, out, texts)
        write_json(out / "meta.json", meta)
    print(
        f"tokenize: vocab {vocab}; "
        + ", ".join(
            f"{s}: {v['records']} records / {v['tokens']} tokens"
            + (f" + {v['target_tokens']} target tokens" if targets else "")
            for s, v in stats.items()
        )
    )


def corpus_split_counts(cfg: Any) -> dict:
    """Records per split of the prepared pretraining corpus (prepare_corpus's cleaning.json)."""
    folder = Path(cfg.paths.corpus_prepared)
    meta = folder / "meta.json"
    if not meta.is_file() or not json.loads(meta.read_text()).get("enabled"):
        raise UserError(
            f"{folder} holds no prepared corpus but corpus.source.kind={cfg.corpus.source.kind}; "
            "run the collect_corpus and prepare_corpus stages first (dvc repro prepare_corpus)"
        )
    return json.loads((folder / "cleaning.json").read_text())["per_split"]


def write_corpus_shards(
    cfg: Any,
    tokenizer: Any,
    prepared: Path,
    shards: Path,
    task_texts: Callable[[dict], list[str]] | None = None,
) -> dict:
    """Encode the pretraining corpus into ``shards/corpus/`` (train: the task's train text first
    when ``corpus.include_task_train``, then the corpus; val: the corpus's own held-out share)
    and return its counts for the shards' ``meta.json``. Labels are all -1: nothing is labelled."""
    from tqdm import tqdm

    from lmforge.data.tokenization import encode_to_shards, ids_dtype, special_ids

    folder = Path(cfg.paths.corpus_prepared)
    counts = corpus_split_counts(cfg)
    out = shards / "corpus"
    out.mkdir()

    def texts(split: str):
        if split == "train" and cfg.corpus.include_task_train:
            for record in read_jsonl(prepared / "train.jsonl"):
                for text in task_texts(record) if task_texts else [record["text"]]:
                    yield text, -1
        for record in read_jsonl(folder / f"{split}.jsonl"):
            yield record["text"], -1

    task_train = json.loads((prepared / "cleaning.json").read_text())["per_split"]["train"]
    stats = {}
    for split in ("train", "val"):
        total = counts[split] + (task_train if split == "train" and cfg.corpus.include_task_train else 0)
        with tqdm(
            total=total, desc=f"encode (corpus {split})", unit=" records", mininterval=1.0, disable=None
        ) as bar:
            stats[split] = encode_to_shards(tokenizer, texts(split), out, split, progress=bar)
    vocab = tokenizer.get_vocab_size()
    write_json(
        out / "meta.json",
        {
            "vocab_size": vocab,
            "dtype": ids_dtype(vocab).name,
            "special_ids": special_ids(),
            "labels": [],
            "splits": stats,
        },
    )
    source = json.loads((folder / "meta.json").read_text())["source"]
    print(
        f"tokenize: pretraining corpus ({source['kind']}"
        f"{', with the task train split' if cfg.corpus.include_task_train else ''}): "
        + ", ".join(f"{s}: {v['records']} records / {v['tokens']} tokens" for s, v in stats.items())
    )
    return {
        "source": source,
        "include_task_train": cfg.corpus.include_task_train,
        "splits": stats,
    }
