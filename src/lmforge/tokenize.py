"""Stage 3, tokenize: train the tokenizer on the train split, encode every split to shards.

Outputs: ``data/tokenizer/tokenizer.json`` and ``data/shards/`` (see
:mod:`lmforge.data.tokenization` for the shard format, and ``meta.json`` for the counts). The
task (``task.name``; :meth:`lmforge.tasks.base.Task.tokenizer_texts` and
:meth:`~lmforge.tasks.base.Task.write_shards`) says which texts of a record the tokenizer trains
on and how the shards are written: text and label id by default, with target shards or word
tags where its records hold them. With ``model=hf`` no tokenizer is trained: the checkpoint's
own (``AutoTokenizer``) is saved to ``data/tokenizer/`` and encodes the shards, and its special
tokens fill ``meta.json``'s ``special_ids``.

The two folders are one unit (:func:`lmforge.core.unit.atomic_dirs`): both are written aside and
swapped in together, so an interrupted run leaves the old pair and a finished one the new pair,
and ``meta.json`` records the sha256 of the ``tokenizer.json`` that encoded the shards
(``tokenizer_sha256``), which every stage reading them checks (:mod:`lmforge.data.pairing`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl, write_json
from lmforge.core.task_registry import get_task
from lmforge.core.unit import atomic_dirs
from lmforge.data.encode import corpus_split_counts, write_corpus_shards  # noqa: F401  (re-exported)
from lmforge.data.provenance import check_prepared


def run(cfg: Config) -> None:
    from lmforge.data.tokenization import special_ids

    prepared = Path(cfg.paths.prepared)
    if not (prepared / "labels.json").is_file():
        raise UserError(f"{prepared} is incomplete; run the prepare stage first (dvc repro prepare)")
    check_prepared(cfg)  # made for this task, source and cleaning, from the data/raw there now
    counts = json.loads((prepared / "cleaning.json").read_text())["per_split"]
    if cfg.tokenizer.kind == "wordpiece" and not cfg.model.is_hf:
        print(
            "tokenize: note: the WordPiece trainer is not deterministic (tokenizers#1794): "
            "a rerun can give a slightly different vocabulary; tokenizer=bpe reproduces exactly",
            file=sys.stderr,
        )

    from lmforge.data.pairing import KEY, tokenizer_digest

    task = get_task(cfg.task.name)
    with atomic_dirs(cfg.paths.tokenizer, cfg.paths.shards) as (tokenizer_out, shards_out):
        if cfg.model.is_hf:
            # model=hf: the checkpoint's own tokenizer, never retrained (its ids are the model's).
            tokenizer, specials, checkpoint = checkpoint_tokenizer(cfg, tokenizer_out)
        else:
            tokenizer, specials, checkpoint = (
                trained_tokenizer(cfg, prepared, counts, task),
                special_ids(),
                None,
            )
            tokenizer.save(str(tokenizer_out / "tokenizer.json"))
        # The task writes the shards where it is told (cfg.paths.shards): here, the unit's
        # temporary, which its own atomic_dir replaces in one piece.
        task.write_shards(
            replace(cfg, paths=replace(cfg.paths, shards=str(shards_out))),
            tokenizer,
            prepared,
            specials,
            checkpoint,
        )
        meta_path = shards_out / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"task {task.name}: write_shards wrote no {cfg.paths.shards}/meta.json")
        meta = json.loads(meta_path.read_text())
        meta[KEY] = tokenizer_digest(tokenizer_out / "tokenizer.json")
        write_json(meta_path, meta)


def trained_tokenizer(cfg: Config, prepared: Path, counts: dict, task: Any) -> Any:
    """A tokenizer trained on the train split (the texts ``task.tokenizer_texts`` gives of each
    record: sources and targets alike for text-to-text), or on a hash sample of it of about
    ``tokenizer.max_train_texts`` texts."""
    from tqdm import tqdm

    from lmforge.data.tokenization import in_sample, train_tokenizer

    per_record = task.texts_per_record
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
    texts = (text for r in records for text in task.tokenizer_texts(r))
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
            unit=" texts" if per_record > 1 else " records",
            mininterval=1.0,
            disable=None,
        ),
        cfg.tokenizer,
        length=length,
    )


def checkpoint_tokenizer(cfg: Config, out: Path) -> tuple[Any, dict, dict]:
    """``model=hf``: the checkpoint's tokenizer (its ``tokenizers`` backend encodes the shards),
    saved whole in ``out`` (``save_pretrained``), its special ids, and what the
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
    hf_tokenizer.save_pretrained(str(out))
    if not (out / "tokenizer.json").is_file():
        raise UserError(
            f"model.name_or_path={m.name_or_path}: its tokenizer saves no tokenizer.json; pick a "
            "checkpoint with a fast (tokenizers) tokenizer"
        )
    print(f"tokenize: {m.name_or_path}'s own tokenizer ({len(hf_tokenizer)} tokens), not retrained")
    record = {"kind": "hf", "name_or_path": m.name_or_path, "revision": m.revision}
    return hf_tokenizer.backend_tokenizer, specials, record


main = stage(run)

if __name__ == "__main__":
    main()
