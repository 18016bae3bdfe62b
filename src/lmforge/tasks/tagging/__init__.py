"""Token tagging (part-of-speech, named entities): one tag per word.

Words are split into subwords by the project's tokenizer and the model predicts at each word's
first subword (:mod:`lmforge.data.tagging`: the alignment, the shards, sentences longer than the
context cut into windows of whole words); the head is :class:`lmforge.models.tagger.TokenTagger`,
the loss cross-entropy over first subwords. The best checkpoint is the one with the best
validation **macro F1 over tags**: accuracy is dominated by the frequent tags (``O`` is ~83 % of
CoNLL-2003 words, so a tagger that finds few entities still scores high), while macro F1 moves
with every tag, entity tags and rare parts of speech alike; accuracy is logged next to it. Test
figures per word: accuracy, macro and per-tag precision/recall/F1, a tag confusion matrix, and
entity-level span scores when the tags are BIO/BIOES; registered as a pyfunc model that tags
raw sentences (whitespace-separated words) or pre-split word lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import load_json, write_json
from lmforge.tasks.base import Task, TaskData, eval_plots, log_f1_chart, word_vectors_shape
from lmforge.tasks.tagging.config import TaggingConfig


def _tagging_meta(meta: dict, where: str) -> dict:
    if "tagging" not in meta:
        raise UserError(
            f"{where}: the shards hold no word tags; task=tagging needs tagged data "
            "(a .conllu/.conll source, or data.source.tags_column for jsonl/parquet/hf)"
        )
    return meta["tagging"]


class TaggingTask(Task):
    name = "tagging"
    objective = "best_val_f1"
    monitor = "val/f1"
    mode = "max"
    finetune_metrics = ("val_per_tag.json",)  # after_fit's per-tag report
    config_class = TaggingConfig
    supports_word_vectors = True
    headline_metric = "accuracy"  # per word, as the most-frequent-tag baselines score it
    levers = (
        "pretrain on unlabelled in-domain text (corpus=local corpus.source.path=FILE "
        "pretrain.enabled=true), or start from a pretrained checkpoint "
        "(model=hf model.name_or_path=NAME)"
    )

    def collect_tally(self, cfg: Config) -> Any:
        from lmforge.tasks.tagging.stages import SentenceCount

        return SentenceCount()

    def prepare_tally(self, cfg: Config) -> Any:
        from lmforge.tasks.tagging.stages import TagTally

        return TagTally()

    def sentence_words(self, record: dict) -> list[str]:
        return record["words"]

    def write_shards(
        self, cfg: Config, tokenizer: Any, prepared: Path, specials: dict, checkpoint: Any
    ) -> None:
        from lmforge.tasks.tagging.stages import write_tagged_shards

        write_tagged_shards(cfg, tokenizer, prepared, specials, checkpoint)

    def baselines(self, cfg: Config) -> dict:
        from lmforge.tasks.tagging.stages import baselines

        return baselines(cfg)

    def report_lines(self, finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
        from lmforge.tasks.tagging.stages import report_lines

        return report_lines(finetune, evaluation, baselines)

    def export_target(
        self, config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool
    ) -> Any:
        from lmforge.tasks.tagging.export import export_target

        return export_target(config, config_path, weights, base, token_logits)

    def data(self, cfg: Config, meta: dict) -> TaskData:
        from lmforge.data.tagging import TagCollate, TaggedWindows, shard_sentences

        tagging = _tagging_meta(meta, cfg.paths.shards)
        special = meta["special_ids"]
        max_len = cfg.finetune.max_len
        train, val = (
            TaggedWindows(shard_sentences(cfg.paths.shards, split), max_len, special["cls"], special["sep"])
            for split in ("train", "val")
        )
        if len(train) == 0 or len(val) == 0:
            raise UserError(
                f"{cfg.paths.shards}: no tagged sentences in the train or val split; "
                "add data or raise data.split.val_fraction"
            )
        # Sentences longer than the context are tagged in windows of whole words: counted.
        split = {"train": train.split_sentences, "val": val.split_sentences}
        if any(split.values()) or train.truncated_words or val.truncated_words:
            print(
                f"finetune: {split['train']} train and {split['val']} val sentences exceed "
                f"finetune.max_len={max_len} subwords and are tagged in windows of whole words; "
                f"{train.truncated_words + val.truncated_words} single words longer than the "
                "context keep their first subwords"
            )
        return TaskData(
            train=train,
            val=val,
            collate=TagCollate(special["pad"]),
            train_lengths=train.lengths,
            truncated=split,
            params={
                "data.num_tags": len(tagging["tags"]),
                "data.train_words": train.words,
                "data.val_words": val.words,
                "task.word_feature_buckets": cfg.task.word_feature_buckets,
                "task.context_lstm": cfg.task.context_lstm,
                "task.context_over": cfg.task.context_over,
                "task.char_cnn": cfg.task.char_cnn,
                "vectors.enabled": cfg.vectors.enabled,
                "task.word_dropout": cfg.task.word_dropout,
            },
        )

    def module(self, cfg: Config, model_cfg: Any, meta: dict, total_steps: int) -> Any:
        from lmforge.lit.tagger import LitTagger

        tags = _tagging_meta(meta, cfg.paths.shards)["tags"]
        model = None
        if cfg.model.is_hf:
            from lmforge.lit.workspace import hf_checkpoint
            from lmforge.models.hf import HFTagger

            checkpoint, lora = hf_checkpoint(cfg)
            model = HFTagger.pretrained(checkpoint, len(tags), lora)
        vectors = self._word_vectors(cfg)
        module = LitTagger(
            model_cfg,
            num_tags=len(tags),
            feature_buckets=cfg.task.word_feature_buckets,
            context_lstm=cfg.task.context_lstm,
            context_over=cfg.task.context_over,
            word_vectors=None if vectors is None else tuple(vectors[1].shape),
            char_cnn=cfg.task.char_cnn,
            word_dropout=cfg.task.word_dropout,
            special_ids=meta["special_ids"],
            optim=cfg.optim,
            total_steps=total_steps,
            model=model,
        )
        if vectors is not None:
            module.model.set_word_vectors(*vectors)
        return module

    @staticmethod
    def _word_vectors(cfg: Config):
        """The word_vectors stage's keys and vectors (tensors) with ``vectors.enabled``, else None."""
        if not cfg.vectors.enabled:
            return None
        import torch

        from lmforge.data.tagging import word_key
        from lmforge.models.word_vectors import load_word_vectors

        vocab, table = load_word_vectors(cfg)
        keys = torch.tensor([word_key(w) for w in vocab], dtype=torch.long)
        return keys, torch.from_numpy(table)

    def model_options(self, cfg: Config, meta: dict) -> dict:
        return {
            "tags": meta["tagging"]["tags"],
            "max_len": cfg.finetune.max_len,
            "feature_buckets": cfg.task.word_feature_buckets,
            "context_lstm": cfg.task.context_lstm,
            "context_over": cfg.task.context_over,
            "word_vectors": word_vectors_shape(cfg),
            "char_cnn": cfg.task.char_cnn,
        }

    def after_fit(self, module: Any, val_loader: Any, cfg: Config, meta: dict) -> dict:
        """Per-tag precision/recall/F1 (and entity spans) on the validation split:
        ``metrics/val_per_tag.json`` and ``val_f1_tag_<tag>`` metrics."""
        import mlflow

        from lmforge.tasks.tagging.scoring import mlflow_metrics, predict_words, score

        tagging = meta["tagging"]
        names = [*tagging["tags"], *tagging["unseen_tags"]]
        module.model.eval()
        predicted, gold = predict_words(module.model, val_loader)
        lengths = [len(s.starts) for s in val_loader.dataset.sentences]
        report, _ = score(names, len(tagging["tags"]), gold, predicted, lengths)
        path = Path(cfg.paths.metrics) / "val_per_tag.json"
        write_json(path, report)
        mlflow.log_artifact(str(path))
        mlflow.log_metrics(
            {
                k: v
                for k, v in mlflow_metrics(report, "val").items()
                if k.startswith(("val_f1_tag_", "val_entity_"))
            }
        )
        log_f1_chart(report["per_tag"], f"validation F1 per tag (macro {report['f1']:.3f})")
        return report

    def log_model(self, cfg: Config, folder: Path) -> Any:
        from lmforge.tasks.tagging.pyfunc import EXAMPLE_SENTENCES, TextTagger
        from lmforge.tracking.registry import log_pyfunc

        config = load_json(folder / "config.json", "finetune")
        return log_pyfunc(
            cfg, folder, TextTagger(), EXAMPLE_SENTENCES, extra={"tags": config["tags"]}, free_input=True
        )

    def evaluate(self, cfg: Config, folder: Path) -> dict:
        from lmforge.data.tagging import TaggedWindows, shard_sentences
        from lmforge.tasks.tagging.scoring import load_tagger

        model, config, tokenizer = load_tagger(folder)
        meta = load_json(Path(cfg.paths.shards) / "meta.json", "tokenize")
        tagging = _tagging_meta(meta, cfg.paths.shards)
        # Shard tag ids -> the model's tag ids by name (tags the model lacks go after its own).
        names = list(config["tags"])
        shard_names = [*tagging["tags"], *tagging["unseen_tags"]]
        for tag in shard_names:
            if tag not in names:
                names.append(tag)
        remap = [names.index(t) for t in shard_names]
        sentences = shard_sentences(cfg.paths.shards, "test")
        if not sentences:
            raise UserError(f"{cfg.paths.shards}: the test split holds no tagged sentences")
        import numpy as np

        remap_ids = np.asarray(remap, dtype=np.int32)
        for sentence in sentences:
            sentence.tags = remap_ids[sentence.tags]
        special = meta["special_ids"]
        test = TaggedWindows(sentences, config["max_len"], special["cls"], special["sep"])
        return self._scored(cfg, model, config, names, test, "test", tokenizer=tokenizer)

    def _scored(
        self,
        cfg: Config,
        model: Any,
        config: dict,
        names: list[str],
        data: Any,
        prefix: str,
        where: str | None = None,
        tokenizer: Any = None,
    ) -> dict:
        from lmforge.lit.workspace import model_special_ids
        from lmforge.metrics.figures import confusion_csv, confusion_png, f1_csv, f1_png, table_csv
        from lmforge.tasks.tagging.scoring import (
            errors_table,
            loader,
            mlflow_metrics,
            predict_words,
            score,
            summary,
        )

        pad = model_special_ids(config)["pad"]
        predicted, gold = predict_words(model, loader(data, cfg.eval.batch_size, pad))
        lengths = [len(s.starts) for s in data.sentences]
        report, matrix = score(names, len(config["tags"]), gold, predicted, lengths)
        report.update({"split_sentences": data.split_sentences, "truncated_words": data.truncated_words})
        if where is not None:
            return {"report": {"file": where, **report}, "summary": summary(report, where)}
        plots = eval_plots(cfg)
        confusion_csv(
            ((names[a], names[p]) for a, p in zip(gold, predicted, strict=True)), plots / "confusion.csv"
        )
        confusion_png(
            matrix.numpy(),
            names,
            plots / "confusion.png",
            f"{prefix}: accuracy {report['accuracy']:.3f}, macro F1 {report['f1']:.3f}",
        )
        f1_csv(report["per_tag"], plots / "f1.csv")
        f1_png(report["per_tag"], plots / "f1.png", f"{prefix} F1 per tag (macro {report['f1']:.3f})")
        errors = errors_table(tokenizer, data.sentences, names, gold, predicted)
        table_csv(errors, plots / "errors.csv")
        return {
            "report": report,
            "mlflow_metrics": mlflow_metrics(report, prefix),
            "artifacts": [
                plots / "confusion.png",
                plots / "confusion.csv",
                plots / "f1.png",
                plots / "f1.csv",
                plots / "errors.csv",
            ],
            "tables": {f"{prefix}_errors.json": errors},
            "summary": summary(report, prefix),
        }

    def evaluate_file(self, cfg: Config, folder: Path, path: Path) -> dict:
        from lmforge.data.tagging import TaggedWindows, plain_sentences
        from lmforge.lit.workspace import model_special_ids
        from lmforge.tasks.tagging.scoring import load_tagger, read_tagged_file, tag_ids

        model, config, tokenizer = load_tagger(folder)
        records = read_tagged_file(cfg, path)
        ids, names, unseen = tag_ids(records, config["tags"])
        for tag, source in unseen.items():
            print(
                f"evaluate: note: {source}: tag {tag!r} is not one the model knows "
                f"({len(config['tags'])} tags); its words are scored as wrong and counted"
            )
        special = model_special_ids(config)
        sentences = plain_sentences(tokenizer, [r["words"] for r in records], special["unk"], ids)
        data = TaggedWindows(sentences, config["max_len"], special["cls"], special["sep"])
        return self._scored(cfg, model, config, names, data, "file", where=str(path))


__all__ = ["TaggingTask"]
