"""What the data stages and the report do with word-tagged sentences (``{"words", "tags"}``
records; the tagging task's hooks, called by :class:`lmforge.tasks.tagging.TaggingTask`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import atomic_dir, read_jsonl, write_json
from lmforge.tasks.base import CollectTally, PrepareTally


class SentenceCount(CollectTally):
    def __init__(self) -> None:
        super().__init__()
        self.sentences = 0

    def add(self, record: dict) -> None:
        super().add(record)
        self.sentences += "words" in record

    def meta(self) -> dict:
        return {"tagged_sentences": self.sentences} if self.sentences else {}

    def summary(self) -> str:
        return f"{self.sentences} tagged sentences" if self.sentences else super().summary()


class TagTally(PrepareTally):
    """The tags of each split: ``tags.json`` is the train split's tag set in text order
    (index = tag id); tags found only in val/test are listed in ``cleaning.json`` under
    ``unseen_tags`` with their word counts: no model can predict them, so they score as wrong."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {}

    def add(self, split: str, record: dict) -> None:
        self.counts.setdefault(split, Counter()).update(record.get("tags", ()))

    def finish(self, raw: Path, out: Path, names: list, summary: dict) -> str:
        train = self.counts.get("train", Counter())
        tags = sorted(train)
        if len(tags) < 2:
            raise UserError(
                f"{raw}: the train split holds {len(tags)} tag(s) ({tags}); a "
                "tagger needs at least two; check data.source.tags_column"
            )
        write_json(out / "tags.json", tags)
        unseen = {
            split: {t: n for t, n in sorted(self.counts.get(split, Counter()).items()) if t not in train}
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
        return f"{len(tags)} tags"


def write_tagged_shards(
    cfg: Config, tokenizer: Any, prepared: Path, specials: dict, checkpoint: dict | None
) -> None:
    """Tagging shards (:mod:`lmforge.data.tagging`): words, first subwords, tag ids and word
    features per split; tags seen only in val/test get ids after the train tags."""
    from tqdm import tqdm

    from lmforge.data.cleaning import SPLITS
    from lmforge.data.encode import write_corpus_shards
    from lmforge.data.tagging import FEATURE_NAMES, encode_tagged_to_shards
    from lmforge.data.tokenization import ids_dtype

    counts = json.loads((prepared / "cleaning.json").read_text())["per_split"]
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


def most_frequent_tags(sentences: list[dict]) -> tuple[dict[str, str], str]:
    """Each word form's most frequent tag (exact, case-sensitive form; ties: the tag seen first)
    and the most frequent tag overall (for unseen forms), from ``{"words", "tags"}`` records."""
    from collections import Counter

    per_word: dict[str, Counter] = {}
    overall: Counter = Counter()
    for record in sentences:
        for word, tag in zip(record["words"], record["tags"], strict=True):
            per_word.setdefault(word, Counter())[tag] += 1
            overall[tag] += 1
    # Counter.most_common keeps insertion order among equal counts: the tag seen first wins.
    return ({w: c.most_common(1)[0][0] for w, c in per_word.items()}, overall.most_common(1)[0][0])


def tagging_baselines(prepared: Path) -> dict:
    """The most-frequent-tag baseline, per word, on the test split: learnt from the train split
    (what the tagger trains on) and from train + val (the whole training file when validation is
    cut from it, as published baselines use), with accuracy on seen and unseen word forms."""
    train = list(read_jsonl(prepared / "train.jsonl"))
    val = list(read_jsonl(prepared / "val.jsonl"))
    test = list(read_jsonl(prepared / "test.jsonl"))
    if not test:
        raise UserError(f"{prepared / 'test.jsonl'} holds no sentences; add a test split")
    results = {}
    for name, source in (("most_frequent_tag", train), ("most_frequent_tag_train_and_val", train + val)):
        lexicon, fallback = most_frequent_tags(source)
        counts = {"seen": [0, 0], "unseen": [0, 0]}
        for record in test:
            for word, tag in zip(record["words"], record["tags"], strict=True):
                kind = "seen" if word in lexicon else "unseen"
                counts[kind][0] += lexicon.get(word, fallback) == tag
                counts[kind][1] += 1
        correct = counts["seen"][0] + counts["unseen"][0]
        words = counts["seen"][1] + counts["unseen"][1]
        results[name] = {
            "accuracy": correct / words,
            "correct": correct,
            "words": words,
            "unseen_words": counts["unseen"][1],
            "unseen_tag": fallback,
            **{f"accuracy_{k}": (v[0] / v[1] if v[1] else 0.0) for k, v in counts.items()},
        }
    return results


def baselines(cfg: Config) -> dict:
    results = tagging_baselines(Path(cfg.paths.prepared))
    for name, values in results.items():
        print(
            f"baselines: {name}: word accuracy {values['accuracy']:.4f} "
            f"({values['correct']}/{values['words']}; unseen forms {values['unseen_words']}"
            f", {values['accuracy_unseen']:.4f} right)"
        )
    return results


def report_lines(finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
    lines = []
    if "best_val_f1" in finetune:
        lines.append(
            f"finetune  best val macro F1 {finetune['best_val_f1']:.4f} ({finetune['epochs']} epochs)"
        )
    if "accuracy" in evaluation:
        # Scored per word.
        lines.append(
            f"test      accuracy {evaluation['accuracy']:.4f}  macro P {evaluation['precision']:.4f}"
            f"  R {evaluation['recall']:.4f}  F1 {evaluation['f1']:.4f}  ({evaluation['words']} words)"
        )
        if "entities" in evaluation:
            e = evaluation["entities"]
            lines.append(
                f"          entities P {e['precision']:.4f}  R {e['recall']:.4f}  "
                f"F1 {e['f1']:.4f}  ({e['support']} gold spans)"
            )
    for name, values in baselines.items():
        f1 = f"  macro F1 {values['f1']:.4f}" if "f1" in values else ""
        lines.append(f"baseline  {name:<15} accuracy {values['accuracy']:.4f}{f1}")
    return lines
