"""Text-to-text: translation and summarization, a text written from a text.

The architecture is a decoder-only **prefix LM** (:class:`lmforge.models.decoder.PrefixLM`):
``[CLS] source [SEP]`` is read with bidirectional attention, ``target [SEP]`` is written causally,
the loss on the target only. It reuses causal-LM pretraining as it is (the same weights, head
included) and, with the source attended both ways, matches an encoder-decoder of the same size
in the published comparisons (Zhang et al. 2022, arXiv 2202.00528; Gao et al., AACL 2022),
where a causally masked source falls behind at small scale (``task.prefix_lm=false`` keeps that
variant for comparison).

The best checkpoint is the lowest validation target loss; evaluation decodes the test sources
with ``generate.*`` and scores SacreBLEU, chrF, ROUGE-1/2/L and exact match against the
references (torchmetrics, :mod:`lmforge.metrics.text`), with target perplexity and mean
generated length; registered as a pyfunc model that returns the generated text.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmforge.core.config import Config, _check
from lmforge.core.errors import UserError
from lmforge.core.io import read_jsonl
from lmforge.tasks.base import Task, TaskData, eval_plots
from lmforge.tasks.text2text.config import TextToTextConfig

SAMPLE_ROWS = 100  # source / reference / prediction rows logged as an MLflow table
EXAMPLE_TEXTS = [
    "Return the number of items in the queue; not reliable across threads.",
    "Ein Mann fährt mit dem Fahrrad eine Straße entlang.",
]


class TextToTextTask(Task):
    name = "text2text"
    objective = "best_val_loss"
    monitor = "val/loss"
    mode = "min"
    config_class = TextToTextConfig
    generates = True
    # One joint vocabulary: a decoder reads the source and writes the target with it.
    texts_per_record = 2
    # Its baselines (lead, retrieval) are scored as eval.json is (lmforge.metrics.text), 0-100:
    # ROUGE-L, the summarization figure, is the one set against them.
    headline_metric = "rougeL"
    headline_points = 1.0
    levers = (
        "pretrain on unlabelled in-domain text (corpus=local corpus.source.path=FILE "
        "pretrain.enabled=true), start from a pretrained checkpoint (model=hf "
        "model.name_or_path=NAME), or retrieve and rerank training pairs (task.retrieval=true "
        "generate.rerank=10)"
    )

    @classmethod
    def check(cls, cfg: Config) -> None:
        t = cfg.task
        _check(
            not t.retrieval or not cfg.model.is_hf,
            "task.retrieval",
            "retrieval-augmented sources are for lmforge's own text-to-text model: use it with "
            "task=text2text (not model=hf), or set task.retrieval=false",
        )
        # [CLS] source [SEP] target [SEP]
        framed = t.max_source_len + t.max_target_len + 3
        _check(
            framed <= cfg.model.max_len,
            "task.max_source_len",
            f"max_source_len + max_target_len + 3 = {framed} exceeds model.max_len="
            f"{cfg.model.max_len}; lower the budgets or raise model.max_len",
        )

    def collect_tally(self, cfg: Config) -> Any:
        from lmforge.tasks.text2text.stages import PairCount

        return PairCount()

    def prepare_tally(self, cfg: Config) -> Any:
        from lmforge.tasks.text2text.stages import PairTally

        return PairTally()

    def tokenizer_texts(self, record: dict) -> list[str]:
        return [record["text"], record["target"]]

    def write_shards(
        self, cfg: Config, tokenizer: Any, prepared: Path, specials: dict, checkpoint: Any
    ) -> None:
        from lmforge.tasks.text2text.stages import write_pair_shards

        write_pair_shards(cfg, tokenizer, prepared, specials, checkpoint, self.tokenizer_texts)

    def baselines(self, cfg: Config) -> dict:
        from lmforge.tasks.text2text.stages import baselines

        return baselines(cfg)

    def report_lines(self, finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
        from lmforge.tasks.text2text.stages import report_lines

        return report_lines(finetune, evaluation, baselines)

    def export_target(
        self, config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool
    ) -> Any:
        from lmforge.tasks.text2text.export import export_target

        return export_target(config, config_path, weights, base, token_logits)

    def generator(self, folder: Path, clean: Any) -> Any:
        from lmforge.tasks.text2text.runtime import TextToTextModel

        return TextToTextModel.load(folder, clean=clean)

    def data(self, cfg: Config, meta: dict) -> TaskData:
        from lmforge.data.datasets import SourceTargetPairs
        from lmforge.data.tokenization import TokenShards

        if not meta.get("targets"):
            raise UserError(
                f"{cfg.paths.shards}: the data has no targets; task=text2text needs "
                "source/target pairs (data.source.target_column or data.source.parallel)"
            )
        t = cfg.task
        train = SourceTargetPairs(TokenShards(cfg.paths.shards, "train"), t.max_source_len, t.max_target_len)
        val = SourceTargetPairs(TokenShards(cfg.paths.shards, "val"), t.max_source_len, t.max_target_len)
        if len(train) == 0 or len(val) == 0:
            raise UserError(f"{cfg.paths.shards}: the train or val split holds no pairs")
        truncated = {
            f"{split}_{side}": getattr(data, f"truncated_{side}s")
            for split, data in (("train", train), ("val", val))
            for side in ("source", "target")
        }
        if any(truncated.values()):
            print(
                f"finetune: truncated to task.max_source_len={t.max_source_len} / "
                f"max_target_len={t.max_target_len} tokens: "
                + ", ".join(f"{v} {k.replace('_', ' ')}s" for k, v in truncated.items())
            )
        collate: Any = PairCollate()
        if cfg.model.is_hf:
            from lmforge.lit.workspace import hf_checkpoint
            from lmforge.models.hf import is_encoder_decoder

            collate = HFPairCollate(meta["special_ids"], is_encoder_decoder(hf_checkpoint(cfg)[0]))
        return TaskData(
            train=train, val=val, collate=collate, train_lengths=train.lengths, truncated=truncated
        )

    def module(self, cfg: Config, model_cfg: Any, meta: dict, total_steps: int) -> Any:
        from lmforge.lit.text2text import LitTextToText

        if cfg.model.is_hf:
            from lmforge.lit.workspace import hf_checkpoint
            from lmforge.models.hf import HFTextToText

            # A decoder checkpoint attends causally throughout: task.prefix_lm cannot apply.
            model = HFTextToText.pretrained(*hf_checkpoint(cfg))
            return LitTextToText(
                model_cfg, optim=cfg.optim, total_steps=total_steps, prefix_lm=False, model=model
            )
        return LitTextToText(
            model_cfg, optim=cfg.optim, total_steps=total_steps, prefix_lm=cfg.task.prefix_lm
        )

    def load_pretrained(self, module: Any, folder: Path) -> str:
        """The whole pretrained LM (encoder and head) where pretraining kept it, else the
        encoder alone (ELECTRA's discriminator has no LM head)."""
        from lmforge.core.io import load_weights

        path = folder / "lm.pt"
        if not path.is_file():
            return super().load_pretrained(module, folder)
        load_weights(module.model, path, "pretrain")
        return str(path)

    def model_options(self, cfg: Config, meta: dict) -> dict:
        return {
            "max_source_len": cfg.task.max_source_len,
            "max_target_len": cfg.task.max_target_len,
            "prefix_lm": cfg.task.prefix_lm,
            "retrieval": cfg.task.retrieval,
        }

    def save(self, module: Any, cfg: Config, meta: dict, out: Path) -> None:
        """The model, and with ``task.retrieval`` the training pairs it retrieves from
        (``retrieval.json``), so evaluation, ``generate`` and the served model read each source
        as training did."""
        super().save(module, cfg, meta, out)
        if cfg.task.retrieval:
            from lmforge.core.io import write_json
            from lmforge.tasks.text2text.runtime import RETRIEVAL_FILE

            write_json(out / RETRIEVAL_FILE, retrieval_pairs(cfg))

    def log_model(self, cfg: Config, folder: Path) -> Any:
        from lmforge.tasks.text2text.pyfunc import TextGenerator
        from lmforge.tracking.registry import log_pyfunc

        files = {}
        if cfg.task.retrieval:  # the pairs save() wrote beside the weights, logged as they are
            from lmforge.tasks.text2text.runtime import RETRIEVAL_FILE

            files["retrieval"] = folder / RETRIEVAL_FILE
        extra = {"decoding": asdict(cfg.generate)}
        return log_pyfunc(cfg, folder, TextGenerator(), EXAMPLE_TEXTS, extra=extra, files=files)

    def evaluate(self, cfg: Config, folder: Path) -> dict:
        prepared = Path(cfg.paths.prepared) / "test.jsonl"
        if not prepared.is_file():
            raise UserError(f"{prepared} is missing; run the prepare stage first")
        records = [r for r in read_jsonl(prepared) if r.get("target") is not None]
        if not records:
            raise UserError(f"{prepared}: the test split holds no source/target pairs")
        result = score_pairs(cfg, folder, [r["text"] for r in records], [r["target"] for r in records])
        plots = eval_plots(cfg)
        samples = plots / "samples.csv"
        write_samples(samples, result.pop("_rows"))
        report = result
        metrics = {f"test_{k}": v for k, v in report.items() if isinstance(v, (int, float))}
        table = read_samples(samples, SAMPLE_ROWS)
        return {
            "report": report,
            "mlflow_metrics": metrics,
            "artifacts": [samples],
            "tables": {"test_samples.json": table},
            "summary": summary_line(report),
        }

    def evaluate_file(self, cfg: Config, folder: Path, path: Path) -> dict:
        from lmforge.data.cleaning import normalize_text
        from lmforge.data.sources import read_local

        source = cfg.data.source
        if not source.parallel and not source.target_column:
            raise UserError(
                "eval.file with a text-to-text model: say where the targets are, "
                "data.source.target_column=COLUMN or data.source.parallel=[src,tgt]"
            )
        sources, targets, empty = [], [], 0
        for record in read_local(
            path,
            text_columns=source.text_columns,
            label_column=None,
            target_column=source.target_column,
            parallel=source.parallel,
            format=source.format,
        ):
            text = normalize_text(record["text"], cfg.data.clean)
            target = normalize_text(record.get("target") or "", cfg.data.clean)
            if text and target:
                sources.append(text)
                targets.append(target)
            else:
                empty += 1
        if not sources:
            raise UserError(f"{path}: no pair with both a source and a target")
        report = score_pairs(cfg, folder, sources, targets)
        report.pop("_rows")
        report.update({"file": str(path), "dropped_empty": empty})
        return {
            "report": report,
            "summary": f"{path}: " + summary_line(report) + f" ({empty} pairs without text skipped)",
        }


class PairCollate:
    """``(source ids, target ids)`` items into a padded prefix-LM batch (a dict of tensors)."""

    def __call__(self, items: list) -> dict:
        from lmforge.data.prefix_lm import text_to_text_batch

        batch = text_to_text_batch([s.tolist() for s, _ in items], [t.tolist() for _, t in items])
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "prefix_mask": batch.prefix_mask,
            "labels": batch.labels,
        }


class HFPairCollate:
    """``(source ids, target ids)`` items into a batch for a ``model=hf`` checkpoint
    (:func:`lmforge.models.hf.text_to_text_hf_batch`)."""

    def __init__(self, special: dict, encoder_decoder: bool) -> None:
        self.special, self.encoder_decoder = special, encoder_decoder

    def __call__(self, items: list) -> dict:
        from lmforge.models.hf import text_to_text_hf_batch

        return text_to_text_hf_batch(
            [s.tolist() for s, _ in items], [t.tolist() for _, t in items], self.special, self.encoder_decoder
        )


def retrieval_pairs(cfg: Config) -> dict[str, list[str]]:
    """The prepared train split's sources and targets: what a ``task.retrieval`` model searches."""
    path = Path(cfg.paths.prepared) / "train.jsonl"
    if not path.is_file():
        raise UserError(f"{path} is missing; run the prepare stage first")
    records = [r for r in read_jsonl(path) if r.get("target") is not None]
    return {"sources": [r["text"] for r in records], "targets": [r["target"] for r in records]}


def score_pairs(cfg: Config, folder: Path, sources: list[str], targets: list[str]) -> dict:
    """Decode ``sources`` with ``generate.*`` and score the outputs against ``targets``."""
    from tqdm import tqdm

    from lmforge.metrics.text import score_texts
    from lmforge.tasks.text2text.runtime import TextToTextModel

    model = TextToTextModel.load(folder)
    with tqdm(
        total=len(sources), desc="evaluate (decode)", unit=" texts", mininterval=1.0, disable=None
    ) as bar:
        generated = model.generate(sources, cfg.generate, progress=bar.update)
    report: dict[str, Any] = dict(score_texts(generated.texts, targets))
    report.update(
        {
            "target_perplexity": model.target_perplexity(sources, targets, cfg.eval.batch_size),
            "mean_generated_tokens": sum(generated.tokens) / len(generated.tokens),
            "examples": len(sources),
            "truncated_sources": generated.truncated_inputs,
            "stopped_at_context": generated.stopped_at_context,
            "stopped_at_max_new_tokens": generated.stopped_at_max_new_tokens,
            "decoding": {
                "strategy": cfg.generate.strategy,
                "num_beams": cfg.generate.num_beams,
                "length_penalty": cfg.generate.length_penalty,
                "max_new_tokens": cfg.generate.max_new_tokens,
                "rerank": cfg.generate.rerank,
                "rerank_similarity": cfg.generate.rerank_similarity,
            },
        }
    )
    rows: list[tuple[str, ...]] = list(zip(sources, targets, generated.texts, strict=True))
    if generated.retrieved:  # generate.rerank: what the decoder alone wrote, scored too
        report.update({f"decoded_{k}": v for k, v in score_texts(generated.decoded, targets).items()})
        report["retrieved_outputs"] = sum(generated.retrieved)
        rows = [
            (*row, decoded, "retrieved" if retrieved else "decoded")
            for row, decoded, retrieved in zip(rows, generated.decoded, generated.retrieved, strict=True)
        ]
    report["_rows"] = rows
    return report


def summary_line(report: dict) -> str:
    from lmforge.metrics.text import format_scores

    line = f"{format_scores(report)} on {report['examples']} pairs"
    if "retrieved_outputs" in report:
        decoded = format_scores(
            {k.removeprefix("decoded_"): v for k, v in report.items() if k.startswith("decoded_")}
        )
        line += (
            f" (generate.rerank: {report['retrieved_outputs']} outputs are training targets; "
            f"the decoder alone: {decoded})"
        )
    return line


def write_samples(path: Path, rows: list[tuple[str, ...]]) -> None:
    """``source, reference, prediction`` rows; with ``generate.rerank`` also what the decoder
    wrote and where the prediction came from (``decoded`` or ``retrieved``)."""
    import csv

    from lmforge.core.io import atomic_file

    header = ["source", "reference", "prediction", "decoded", "origin"][: len(rows[0]) if rows else 3]
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def read_samples(path: Path, limit: int) -> dict[str, list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [row for _, row in zip(range(limit), reader, strict=False)]
        return {key: [row[key] for row in rows] for key in reader.fieldnames or ()}


__all__ = ["TextToTextTask"]
