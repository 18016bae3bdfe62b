"""Text classification (sentiment analysis is one): one label per text.

``[CLS] text [SEP]`` truncated to ``finetune.max_len``, a pooled linear head over the encoder
(:class:`lmforge.models.transformer.SequenceClassifier`), cross-entropy; the best checkpoint by
validation macro F1; test accuracy, macro and per-class precision/recall/F1 and a confusion
matrix; registered as a pyfunc model that returns a label and class probabilities per text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import load_json, write_json
from lmforge.tasks.base import Task, TaskData, eval_plots, log_f1_chart, word_vectors_shape
from lmforge.tasks.classification.config import ClassificationConfig


class ClassificationTask(Task):
    name = "classification"
    objective = "best_val_f1"
    monitor = "val/f1"
    mode = "max"
    finetune_metrics = ("val_per_class.json",)  # after_fit's per-class report
    config_class = ClassificationConfig
    supports_word_vectors = True
    supports_fusion = True
    headline_metric = "accuracy"  # the baselines' (majority class, TF-IDF + logistic regression) too
    levers = (
        "unlabelled in-domain text for the word vectors (corpus=local corpus.source.path=FILE), "
        "pretraining the encoder on it (pretrain.enabled=true), or a pretrained checkpoint "
        "(model=hf model.name_or_path=NAME)"
    )

    def prepare_tally(self, cfg: Config) -> Any:
        from lmforge.tasks.classification.stages import LabelTally

        return LabelTally()

    def baselines(self, cfg: Config) -> dict:
        from lmforge.tasks.classification.stages import baselines

        return baselines(cfg)

    def report_lines(self, finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
        from lmforge.tasks.classification.stages import report_lines

        return report_lines(finetune, evaluation, baselines)

    def export_target(
        self, config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool
    ) -> Any:
        from lmforge.tasks.classification.export import export_target

        return export_target(config, config_path, weights, base, token_logits)

    def data(self, cfg: Config, meta: dict) -> TaskData:
        from lmforge.data.datasets import LabelledRecords
        from lmforge.data.tokenization import TokenShards

        labels = meta["labels"]
        if len(labels) < 2:
            raise UserError(
                f"{cfg.paths.shards}: the data has {len(labels)} label(s); "
                "finetuning needs a labelled source with at least two classes"
            )
        max_len, input_len = cfg.finetune.max_len, cfg.finetune.input_len()
        train = LabelledRecords(TokenShards(cfg.paths.shards, "train"), max_len, input_len)
        val = LabelledRecords(TokenShards(cfg.paths.shards, "val"), max_len, input_len)
        if len(train) == 0 or len(val) == 0:
            raise UserError(
                f"{cfg.paths.shards}: no labelled records in the train or val split; "
                "check data.source.label_column"
            )
        pad = meta["special_ids"]["pad"]
        # Texts longer than the context lose their tail: counted, printed and logged, never silent.
        truncated = {"train": train.truncated, "val": val.truncated}
        if any(truncated.values()):
            print(
                f"finetune: {truncated['train']} of {len(train)} train and {truncated['val']} of "
                f"{len(val)} val texts exceed finetune.max_len={max_len} tokens and are truncated"
                + (f" (the n-gram model reads up to {input_len})" if input_len > max_len else "")
            )
        return TaskData(
            train=train,
            val=val,
            collate=_Collate(pad),
            train_lengths=train.lengths,
            truncated=truncated,
            params={"data.num_labels": len(labels)},
        )

    def module(self, cfg: Config, model_cfg: Any, meta: dict, total_steps: int) -> Any:
        from lmforge.lit.classifier import LitClassifier
        from lmforge.models.transformer import encoder_cut

        model = None
        if cfg.model.is_hf:
            from lmforge.lit.workspace import hf_checkpoint
            from lmforge.models.hf import HFClassifier

            checkpoint, lora = hf_checkpoint(cfg)
            model = HFClassifier.pretrained(checkpoint, len(meta["labels"]), meta["special_ids"]["pad"], lora)
        vectors = self._word_vectors(cfg, meta)
        module = LitClassifier(
            model_cfg,
            num_labels=len(meta["labels"]),
            pooling=cfg.finetune.pooling,
            optim=cfg.optim,
            total_steps=total_steps,
            model=model,
            word_vectors=None if vectors is None else tuple(vectors[1].shape),
            ensemble=cfg.finetune.ensemble,
            ngram_buckets=cfg.finetune.fusion_buckets,
            **encoder_cut(self.model_options(cfg, meta)),
        )
        if vectors is not None:
            module.model.set_word_vectors(*vectors)
        return module

    def before_fit(self, module: Any, data: TaskData, cfg: Config, meta: dict) -> None:
        """``finetune.ngram_fusion``: fit the classifier's n-gram model on the train split."""
        if not cfg.finetune.ngram_fusion:
            return
        import time

        import torch
        from torch.utils.data import DataLoader

        ngrams = module.model.ngrams
        ngrams.set_word_starts(*self._word_starts(cfg, meta))
        # A generator of its own: an iterator draws a seed from the global one otherwise, and
        # the encoder would train on other shuffles and dropout than with the fusion off. With
        # it, "the encoder alone" of a fused model is the finetune.ngram_fusion=false model.
        loader = DataLoader(data.train, batch_size=512, collate_fn=data.collate, generator=torch.Generator())
        start = time.perf_counter()
        fitted = ngrams.fit((batch["input_ids"], batch["labels"]) for batch in loader)
        print(
            f"finetune: n-gram model fitted on {len(data.train)} train texts ({fitted['ngrams']:,} "
            f"n-grams, train accuracy {fitted['train_accuracy']:.3f}, {time.perf_counter() - start:.0f} s)"
        )

    def before_save(self, module: Any, val_loader: Any, cfg: Config, meta: dict) -> dict:
        """``finetune.ngram_fusion``: the n-gram model's weight in the mix, the one of 0, 0.05,
        ..., 0.95 with the best validation macro F1 (the lowest on ties)."""
        if not cfg.finetune.ngram_fusion:
            return {}
        import torch
        from torchmetrics.functional.classification import multiclass_f1_score

        model = module.model
        model.eval()
        model.ngram_weight.zero_()
        own, labels, ngram = [], [], []
        with torch.inference_mode():
            for batch in val_loader:
                own.append(model(batch["input_ids"], batch["attention_mask"]).softmax(-1))
                ngram.append(model.ngrams(batch["input_ids"]).softmax(-1))
                labels.append(batch["labels"])
        own_p, ngram_p, target = torch.cat(own), torch.cat(ngram), torch.cat(labels)
        classes = own_p.shape[-1]

        def f1(weight: float) -> float:
            mixed = (1 - weight) * own_p + weight * ngram_p
            return float(multiclass_f1_score(mixed, target, classes, average="macro"))

        scores = {round(0.05 * step, 2): f1(0.05 * step) for step in range(20)}
        best = max(scores, key=lambda w: (scores[w], -w))
        model.ngram_weight.fill_(best)
        result = {
            "ngram_weight": best,
            "val_f1_fused": scores[best],
            "val_f1_encoder": scores[0.0],
            "val_f1_ngrams": f1(1.0),
        }
        print(
            f"finetune: n-gram fusion weight {best:.2f} (val macro F1 {scores[best]:.4f}; the "
            f"classifier alone {scores[0.0]:.4f}, the n-gram model alone {result['val_f1_ngrams']:.4f})"
        )
        return result

    @staticmethod
    def _word_vectors(cfg: Config, meta: dict):
        """With ``vectors.enabled``: the word_vectors stage's vectors, the keys and rows of their
        words as the tokenizer encodes them, and its word starts (tensors); else None."""
        if not cfg.vectors.enabled:
            return None
        import torch

        from lmforge.models.word_vectors import load_word_vectors, token_kinds, token_word_keys

        vocab, table = load_word_vectors(cfg)
        tokenizer = ClassificationTask._tokenizer(cfg)
        keys, rows = token_word_keys(tokenizer, vocab)
        kinds = token_kinds(tokenizer, meta["special_ids"].values())
        return keys, torch.from_numpy(table), rows, kinds

    @staticmethod
    def _tokenizer(cfg: Config):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(Path(cfg.paths.tokenizer) / "tokenizer.json"))

    @staticmethod
    def _word_starts(cfg: Config, meta: dict):
        """The tokenizer's word starts and its tokens' edges: the n-gram model's words
        (:func:`lmforge.models.word_vectors.token_kinds` and ``token_edges``)."""
        from lmforge.models.word_vectors import token_edges, token_kinds

        tokenizer = ClassificationTask._tokenizer(cfg)
        return token_kinds(tokenizer, meta["special_ids"].values()), token_edges(tokenizer)

    def model_options(self, cfg: Config, meta: dict) -> dict:
        longer = cfg.finetune.input_len() > cfg.finetune.max_len
        return {
            # What a text cut for the encoder ends with (finetune.ngram_max_len).
            **({"special_ids": meta["special_ids"]} if longer else {}),
            "labels": meta["labels"],
            "pooling": cfg.finetune.pooling,
            "max_len": cfg.finetune.max_len,
            "word_vectors": word_vectors_shape(cfg),
            "ensemble": cfg.finetune.ensemble,
            "ngram_buckets": cfg.finetune.fusion_buckets,
            "ngram_max_len": cfg.finetune.input_len(),
        }

    def after_fit(self, module: Any, val_loader: Any, cfg: Config, meta: dict) -> dict:
        """Per-class precision, recall, F1 and support on the validation split, as a JSON
        artifact and as ``val_f1_class_<label>`` metrics."""
        import mlflow

        from lmforge.tasks.classification.scoring import report, score

        labels = meta["labels"]
        module.model.eval()
        overall, per_class, matrix, _, _ = score(module.model, val_loader, len(labels))
        result = report(labels, overall, per_class, matrix.sum(dim=1).tolist())
        path = Path(cfg.paths.metrics) / "val_per_class.json"
        write_json(path, result)
        mlflow.log_artifact(str(path))
        mlflow.log_metrics({f"val_f1_class_{name}": v["f1"] for name, v in result["per_class"].items()})
        log_f1_chart(result["per_class"], f"validation F1 per class (macro {overall['f1']:.3f})")
        return result

    def log_model(self, cfg: Config, folder: Path) -> Any:
        from lmforge.tasks.classification.pyfunc import EXAMPLE_TEXTS, TextClassifier
        from lmforge.tracking.registry import log_pyfunc

        config = load_json(folder / "config.json", "finetune")
        return log_pyfunc(cfg, folder, TextClassifier(), EXAMPLE_TEXTS, extra={"labels": config["labels"]})

    def evaluate(self, cfg: Config, folder: Path) -> dict:
        import torch
        from torch.utils.data import DataLoader

        from lmforge.data.datasets import LabelledRecords, pad_batch
        from lmforge.data.tokenization import TokenShards
        from lmforge.metrics.figures import confusion_csv, confusion_png, f1_csv, f1_png, pr_curve, table_csv
        from lmforge.tasks.classification.scoring import errors_table, load_classifier, report, score

        model, labels, tokenizer, max_len = load_classifier(folder)
        shards = TokenShards(cfg.paths.shards, "test")
        test = LabelledRecords(shards, max_len)
        if len(test) == 0:
            raise UserError(f"{cfg.paths.shards}: the test split holds no labelled records")
        pad = shards.meta["special_ids"]["pad"]
        loader = DataLoader(
            test, batch_size=cfg.eval.batch_size, collate_fn=lambda items: pad_batch(items, pad)
        )
        batches: list = []
        overall, per_class, matrix, actual, predicted = score(model, loader, len(labels), batches)
        result = report(labels, overall, per_class, matrix.sum(dim=1).tolist())
        metrics = {f"test_{k}": v for k, v in overall.items()}
        if getattr(model, "ngram_buckets", 0):
            # Fused with an n-gram model: what the encoder scores alone, so a user sees how much
            # of the figure is the neural model's, and the weight validation chose.
            weight = round(float(model.ngram_weight), 4)  # a float32 0.05 step
            model.ngram_weight.zero_()
            alone = score(model, loader, len(labels))[0]
            model.ngram_weight.fill_(weight)
            result.update(
                {"ngram_weight": weight, "encoder_accuracy": alone["accuracy"], "encoder_f1": alone["f1"]}
            )
            metrics.update(
                {
                    "ngram_weight": weight,
                    "test_encoder_accuracy": alone["accuracy"],
                    "test_encoder_f1": alone["f1"],
                }
            )
        plots = eval_plots(cfg)
        confusion_csv(
            ((labels[a], labels[p]) for a, p in zip(actual, predicted, strict=True)), plots / "confusion.csv"
        )
        confusion_png(
            matrix.numpy(),
            labels,
            plots / "confusion.png",
            f"test: accuracy {overall['accuracy']:.3f}, macro F1 {overall['f1']:.3f}",
        )
        metrics.update({f"test_f1_class_{name}": v["f1"] for name, v in result["per_class"].items()})
        f1_csv(result["per_class"], plots / "f1.csv")
        f1_png(result["per_class"], plots / "f1.png", f"test F1 per class (macro {overall['f1']:.3f})")
        figures = [plots / "f1.png", plots / "f1.csv"]
        probabilities = torch.cat(batches)

        def text(i: int) -> str:  # the test text as the model read it (decoded, untruncated)
            return tokenizer.decode(shards.record(test.rows[i]).tolist())

        errors = errors_table(text, labels, actual, predicted, probabilities)
        table_csv(errors, plots / "errors.csv")
        figures.append(plots / "errors.csv")
        if len(labels) == 2:  # a binary task: the second label is the positive class
            positives = [int(a == 1) for a in actual]
            if 0 < sum(positives) < len(positives):
                metrics["test_average_precision"] = pr_curve(
                    probabilities[:, 1].numpy(), positives, labels[1], plots / "pr.csv", plots / "pr.png"
                )
                figures += [plots / "pr.png", plots / "pr.csv"]
        return {
            "report": result,
            "mlflow_metrics": metrics,
            "artifacts": [plots / "confusion.png", plots / "confusion.csv", *figures],
            "tables": {"test_errors.json": errors},
            "summary": f"test accuracy {overall['accuracy']:.4f}, macro P/R/F1 "
            f"{overall['precision']:.4f}/{overall['recall']:.4f}/{overall['f1']:.4f} "
            f"on {len(test)} examples"
            + (
                f" (the encoder alone {result['encoder_accuracy']:.4f}, "
                f"n-gram weight {result['ngram_weight']:.2f})"
                if "ngram_weight" in result
                else ""
            ),
        }

    def evaluate_file(self, cfg: Config, folder: Path, path: Path) -> dict:
        from lmforge.lit.workspace import model_special_ids
        from lmforge.tasks.classification.scoring import (
            file_batches,
            load_classifier,
            read_labelled_file,
            report,
            score,
        )

        model, labels, tokenizer, max_len = load_classifier(folder)
        records, empty = read_labelled_file(cfg, path, labels)
        index = {str(name): i for i, name in enumerate(labels)}
        special = model_special_ids(load_json(folder / "config.json", "finetune"))
        batches = file_batches(records, tokenizer, index, max_len, cfg.eval.batch_size, special)
        overall, per_class, matrix, _, _ = score(model, batches, len(labels))
        result = report(labels, overall, per_class, matrix.sum(dim=1).tolist())
        result.update({"file": str(path), "dropped_empty_text": empty})
        return {
            "report": result,
            "summary": f"{path}: accuracy {overall['accuracy']:.4f}, macro F1 {overall['f1']:.4f} "
            f"on {len(records)} examples ({empty} rows without text skipped)",
        }


class _Collate:
    """Pads a batch of ``(ids, label)`` items; a class, not a closure, so worker processes can
    pickle it."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, items: list) -> dict:
        from lmforge.data.datasets import pad_batch

        return pad_batch(items, self.pad)


__all__ = ["ClassificationTask"]
