"""Stage 3, tokenize: train the tokenizer on the train split, encode every split to shards.

Outputs: ``data/tokenizer/tokenizer.json`` and ``data/shards/`` (see
:mod:`lmforge.data.tokenization` for the shard format, and ``meta.json`` for the counts).
Text-to-text data (prepared records with a ``target``) trains one tokenizer on the train sources
and targets together and adds target shards next to the source shards; with ``task.retrieval``
each encoded source carries its nearest training pair's target in front
(:mod:`lmforge.retrieval`). Word-tagged data (records
with ``words`` and ``tags``) trains it on the train sentences and writes tagging shards
(:mod:`lmforge.data.tagging`): words, first subwords, tag ids and word features per split.
With ``model=hf`` no tokenizer is trained: the checkpoint's own (``AutoTokenizer``) is saved to
``data/tokenizer/`` and encodes the shards, and its special tokens fill ``meta.json``'s
``special_ids``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from itertools import chain
from pathlib import Path
from typing import Any

from lmforge.cli import stage
from lmforge.config import Config
from lmforge.errors import UserError
from lmforge.io import atomic_dir, read_jsonl, write_json


def run(cfg: Config) -> None:
    from tqdm import tqdm

    from lmforge.data.cleaning import SPLITS
    from lmforge.data.tokenization import (
        encode_targets_to_shards,
        encode_to_shards,
        ids_dtype,
        special_ids,
    )

    prepared = Path(cfg.paths.prepared)
    if not (prepared / "labels.json").is_file():
        raise UserError(f"{prepared} is incomplete; run the prepare stage first (dvc repro prepare)")
    counts = json.loads((prepared / "cleaning.json").read_text())["per_split"]
    names = json.loads((prepared / "labels.json").read_text())
    index = {str(name): i for i, name in enumerate(names)}
    if cfg.tokenizer.kind == "wordpiece" and not cfg.model.is_hf:
        print(
            "tokenize: note: the WordPiece trainer is not deterministic (tokenizers#1794): "
            "a rerun can give a slightly different vocabulary; tokenizer=bpe reproduces exactly",
            file=sys.stderr,
        )

    first = next(iter(read_jsonl(prepared / "train.jsonl")), {})
    targets = "target" in first
    if cfg.model.is_hf:
        # model=hf: the checkpoint's own tokenizer, never retrained (its ids are the model's).
        tokenizer, specials, checkpoint = checkpoint_tokenizer(cfg)
    else:
        tokenizer, specials, checkpoint = (
            trained_tokenizer(cfg, prepared, counts, targets),
            special_ids(),
            None,
        )
        with atomic_dir(cfg.paths.tokenizer) as out:
            tokenizer.save(str(out / "tokenizer.json"))

    augment = retrieval_augmenter(cfg, prepared) if targets else None

    def pairs(split: str):
        records = read_jsonl(prepared / f"{split}.jsonl")
        if augment is not None:
            records = augment(split, list(records))
        for record in records:
            label = record.get("label")
            yield record["text"], (-1 if label is None else index[str(label)])

    if "words" in first:
        write_tagged_shards(cfg, tokenizer, prepared, counts, specials, checkpoint)
        return

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
            meta["corpus"] = write_corpus_shards(cfg, tokenizer, prepared, out)
        write_json(out / "meta.json", meta)
    print(
        f"tokenize: vocab {vocab}; "
        + ", ".join(
            f"{s}: {v['records']} records / {v['tokens']} tokens"
            + (f" + {v['target_tokens']} target tokens" if targets else "")
            for s, v in stats.items()
        )
    )


def retrieval_augmenter(cfg: Config, prepared: Path) -> Any:
    """With ``task.retrieval``, a function ``(split, records) -> records`` whose sources carry
    their nearest training pair's target in front (:mod:`lmforge.retrieval`): train sources
    leave themselves out, val and test sources search the train split only. None otherwise."""
    if not cfg.task.retrieval:
        return None
    from lmforge.retrieval import NearestPairs

    train = list(read_jsonl(prepared / "train.jsonl"))
    index = NearestPairs([r["text"] for r in train], [r["target"] for r in train])

    def augment(split: str, records: list[dict]) -> list[dict]:
        texts = index.augment([r["text"] for r in records], leave_one_out=split == "train")
        return [{**r, "text": text} for r, text in zip(records, texts, strict=True)]

    print(f"tokenize: task.retrieval: sources read with their nearest of {len(train)} training pairs")
    return augment


def trained_tokenizer(cfg: Config, prepared: Path, counts: dict, targets: bool) -> Any:
    """A tokenizer trained on the train split (sources and targets alike for text-to-text), or
    on a hash sample of it of about ``tokenizer.max_train_texts`` texts."""
    from tqdm import tqdm

    from lmforge.data.tokenization import in_sample, train_tokenizer

    per_record = 2 if targets else 1
    length = per_record * counts["train"]
    if cfg.corpus.enabled:
        length += corpus_split_counts(cfg)["train"]
    limit = cfg.tokenizer.max_train_texts
    fraction = 1.0 if limit is None or limit >= length else limit / length
    if fraction < 1.0:
        print(
            f"tokenize: the tokenizer trains on a sample of about {limit} of the {length} train texts "
            "(tokenizer.max_train_texts)"
        )
    records = (r for r in read_jsonl(prepared / "train.jsonl") if in_sample(r["text"], fraction))
    if targets:
        # One joint vocabulary: a decoder reads the source and writes the target with it.
        texts = (text for r in records for text in (r["text"], r["target"]))
    else:
        texts = (r["text"] for r in records)
    if cfg.corpus.enabled:
        # The vocabulary fits both: the corpus it pretrains on and the task it finetunes on.
        corpus = read_jsonl(Path(cfg.paths.corpus_prepared) / "train.jsonl")
        texts = chain(texts, (r["text"] for r in corpus if in_sample(r["text"], fraction)))
    length = round(length * fraction)
    return train_tokenizer(
        tqdm(
            texts,
            total=length,
            desc="tokenizer (train)",
            unit=" texts" if targets else " records",
            mininterval=1.0,
            disable=None,
        ),
        cfg.tokenizer,
        length=length,
    )


def checkpoint_tokenizer(cfg: Config) -> tuple[Any, dict, dict]:
    """``model=hf``: the checkpoint's tokenizer (its ``tokenizers`` backend encodes the shards),
    saved whole in ``data/tokenizer/`` (``save_pretrained``), its special ids, and what the
    shards record of it (``meta.json``'s ``tokenizer``: finetune checks it names the model)."""
    from lmforge.models.hf import Checkpoint, load_tokenizer, tokenizer_special_ids

    m = cfg.model
    checkpoint = Checkpoint(m.name_or_path or "", m.revision, m.trust_remote_code)
    hf_tokenizer = load_tokenizer(checkpoint)
    specials = tokenizer_special_ids(hf_tokenizer)
    if specials["sep"] is None or specials["pad"] is None:
        raise UserError(
            f"model.name_or_path={m.name_or_path}: its tokenizer has no separator/end-of-text "
            "token, which framing a text needs; pick a checkpoint whose tokenizer has sep or eos"
        )
    with atomic_dir(cfg.paths.tokenizer) as out:
        hf_tokenizer.save_pretrained(str(out))
    print(f"tokenize: {m.name_or_path}'s own tokenizer ({len(hf_tokenizer)} tokens), not retrained")
    record = {"kind": "hf", "name_or_path": m.name_or_path, "revision": m.revision}
    return hf_tokenizer.backend_tokenizer, specials, record


def write_tagged_shards(
    cfg: Config, tokenizer, prepared: Path, counts: dict, specials: dict, checkpoint: dict | None
) -> None:
    from tqdm import tqdm

    from lmforge.data.cleaning import SPLITS
    from lmforge.data.tagging import FEATURE_NAMES, encode_tagged_to_shards
    from lmforge.data.tokenization import ids_dtype

    tags = json.loads((prepared / "tags.json").read_text())
    unseen = sorted(
        {
            t
            for split in ("val", "test")
            for t in json.loads((prepared / "cleaning.json").read_text())
            .get("unseen_tags", {})
            .get(split, {})
        }
    )
    tag_index = {t: i for i, t in enumerate([*tags, *unseen])}
    vocab = tokenizer.get_vocab_size()
    dtype = ids_dtype(vocab)
    with atomic_dir(cfg.paths.shards) as out:
        stats = {}
        for split in SPLITS:
            sentences = ((r["words"], r["tags"]) for r in read_jsonl(prepared / f"{split}.jsonl"))
            with tqdm(
                total=counts[split],
                desc=f"encode ({split})",
                unit=" sentences",
                mininterval=1.0,
                disable=None,
            ) as bar:
                stats[split] = encode_tagged_to_shards(
                    tokenizer, sentences, out, split, tag_index, dtype, specials["unk"], progress=bar
                )
        write_json(
            out / "meta.json",
            {
                "vocab_size": vocab,
                "dtype": dtype.name,
                "special_ids": specials,
                "labels": [],
                "splits": stats,
                "tokenizer": checkpoint or asdict(cfg.tokenizer),
                "tagging": {"tags": tags, "unseen_tags": unseen, "features": list(FEATURE_NAMES)},
                **(
                    {"corpus": write_corpus_shards(cfg, tokenizer, prepared, out)}
                    if cfg.corpus.enabled
                    else {}
                ),
            },
        )
    print(
        f"tokenize: vocab {vocab}; {len(tags)} tags; "
        + ", ".join(
            f"{s}: {v['records']} sentences / {v['words']} words / {v['tokens']} tokens"
            for s, v in stats.items()
        )
    )


def corpus_split_counts(cfg: Config) -> dict:
    """Records per split of the prepared pretraining corpus (prepare_corpus's cleaning.json)."""
    folder = Path(cfg.paths.corpus_prepared)
    meta = folder / "meta.json"
    if not meta.is_file() or not json.loads(meta.read_text()).get("enabled"):
        raise UserError(
            f"{folder} holds no prepared corpus but corpus.source.kind={cfg.corpus.source.kind}; "
            "run the collect_corpus and prepare_corpus stages first (dvc repro prepare_corpus)"
        )
    return json.loads((folder / "cleaning.json").read_text())["per_split"]


def write_corpus_shards(cfg: Config, tokenizer, prepared: Path, shards: Path) -> dict:
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
                yield record["text"], -1
                if isinstance(record.get("target"), str):
                    yield record["target"], -1
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


main = stage(run)

if __name__ == "__main__":
    main()
