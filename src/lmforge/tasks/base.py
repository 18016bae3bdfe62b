"""The :class:`Task` interface and the helpers every task shares.

A task owns its axis end to end, so the stages stay ignorant of which task runs: its typed
``task.*`` config and the cross-group checks on it, what ``collect`` and ``prepare`` count and
check, how ``tokenize`` trains the tokenizer and encodes shards, which baselines apply, how token
shards become training examples and batches, the LightningModule (head and loss), the
validation figure that picks the best checkpoint, the finetuned model's files, its metrics on a
split or a file, the MLflow pyfunc model it registers, how it exports to Hugging Face, the
report's summary lines and what ``generate`` does with it. Modelled on fairseq's ``tasks/`` (a
task builds its datasets, model and scoring; models know nothing of data).
:mod:`lmforge.core.task_registry` finds the tasks (built-in and ``lmforge.tasks`` entry points).

This module imports nothing heavy: tasks import torch, Lightning and MLflow inside methods.
Task modules import from here, never from the package ``lmforge.tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.core.config import Config, TaskConfig
from lmforge.core.errors import UserError
from lmforge.lit.workspace import hf_model_record, save_checkpoint


@dataclass
class TaskData:
    """What the finetune stage trains on: datasets, their collate function and how many records
    the task's length budget cut (``{"train": n, "val": n}``, printed and logged)."""

    train: Any
    val: Any
    collate: Any
    train_lengths: Any = None
    truncated: dict[str, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


class CollectTally:
    """What the collect stage counts of a task's raw records (``data/raw/meta.json`` and the
    stage's one-line summary). This default counts labelled records."""

    def __init__(self) -> None:
        self.labelled = 0

    def add(self, record: dict) -> None:
        self.labelled += record.get("label") is not None

    def meta(self) -> dict:
        """Entries added to ``data/raw/meta.json`` beside ``records`` and ``labelled``."""
        return {}

    def summary(self) -> str:
        return f"{self.labelled} labelled"


class PrepareTally:
    """What the prepare stage counts and checks of a task's records, split by split. Labels
    (``labels.json``) are counted by the stage for every task; this default adds the checks of
    one label per text and says ``N classes``."""

    def add(self, split: str, record: dict) -> None:
        """Count one record written to ``split``."""

    def check(self, raw: Path, names: list) -> None:
        """Stop with a one-line :class:`UserError` when the records cannot serve the task
        (``names``: the train split's class names)."""
        if len(names) == 1:
            raise UserError(
                f"{raw}: the train split holds one class only ({names[0]!r}); "
                "a classifier needs at least two labels"
            )

    def finish(self, raw: Path, out: Path, names: list, summary: dict) -> str:
        """Write the task's own files into ``out`` (``data/prepared``), add its counts to
        ``summary`` (``cleaning.json``); return what the stage's summary line ends with."""
        return f"{len(names)} classes"


class TargetCountingTally(PrepareTally):
    """:class:`PrepareTally` that also counts records carrying a ``target`` and refuses records
    that hold both targets and labels (the classification and text-to-text tasks share it)."""

    def __init__(self) -> None:
        self.pairs = 0

    def add(self, split: str, record: dict) -> None:
        self.pairs += "target" in record

    def check(self, raw: Path, names: list) -> None:
        if self.pairs and names:
            raise UserError(
                f"{raw}: records mix targets (text-to-text) and labels "
                "(classification); give data.source.target_column or "
                "data.source.label_column, not both"
            )
        super().check(raw, names)


class Task:
    """The interface every task implements (see the module docstring).

    A new task subclasses this, sets ``name`` (its ``task=NAME``), ``config_class`` and the
    figures below, implements the methods that raise :class:`NotImplementedError`, and is
    declared under the ``lmforge.tasks`` entry point group (:mod:`lmforge.core.task_registry`).
    The defaults of the data hooks serve one label per text (``{"text", "label"}`` records).
    """

    name: str = ""
    # The typed dataclass of the task's ``task.*`` keys (a subclass of lmforge.core.config.TaskConfig,
    # light: stdlib only); ``config.validate`` merges the composed config into it.
    config_class: type = TaskConfig
    # What finetune logs, returns (the objective of Hydra/Optuna sweeps) and promote ranks by.
    objective: str = ""
    # The Lightning metric that picks the best checkpoint and drives early stopping.
    monitor: str = ""
    mode: str = "max"
    # Capabilities the cross-group config checks ask for (lmforge.core.config.Config.__post_init__):
    # lmforge's own model of this task adds frozen word vectors (vectors.enabled) ...
    supports_word_vectors: bool = False
    # ... is an ensemble (finetune.ensemble > 1) or fuses an n-gram model (finetune.ngram_fusion).
    supports_fusion: bool = False
    # Its finetuned model writes text: python -m lmforge.generate runs it (:meth:`generator`).
    generates: bool = False
    # How many texts of a train record the tokenizer learns from (see :meth:`tokenizer_texts`).
    texts_per_record: int = 1
    # Files :meth:`after_fit` writes under ``paths.metrics``: the finetune stage owns them, and
    # removes every task's when it publishes its outputs, so none of another task's stays.
    finetune_metrics: tuple[str, ...] = ()
    # Where the model stands (:meth:`standing`): the test figure set against the baselines, a
    # key of ``metrics/eval.json`` and of each ``metrics/baselines.json`` entry, higher better;
    # None: the task has none, and no standing is computed.
    headline_metric: str | None = None
    # Points per unit of that figure in the report's differences: 100 for a share in 0-1
    # (accuracy), 1 for a figure already on 0-100 (ROUGE, BLEU).
    headline_points: float = 100.0
    # One line naming what to try when a baseline beats the model (the report's ``to try``).
    levers: str = ""

    # --- config -------------------------------------------------------------------------------

    @classmethod
    def check(cls, cfg: Config) -> None:
        """Cross-group checks of the task's keys against the rest of the config, at start-up;
        a one-line :class:`UserError` (``config key 'KEY': ...``). Called by ``Config``."""

    # --- data stages ----------------------------------------------------------------------------

    def collect_tally(self, cfg: Config) -> CollectTally:
        """What collect counts of the raw records (:class:`CollectTally`)."""
        return CollectTally()

    def prepare_tally(self, cfg: Config) -> PrepareTally:
        """What prepare counts, checks and writes besides the splits (:class:`PrepareTally`)."""
        return PrepareTally()

    def tokenizer_texts(self, record: dict) -> list[str]:
        """The texts of a prepared record the tokenizer trains on (and that pretraining reads
        with ``corpus.include_task_train``); ``texts_per_record`` of them."""
        return [record["text"]]

    def sentence_words(self, record: dict) -> list[str]:
        """A prepared record's words, for the word_vectors stage."""
        from lmforge.data.words import text_words

        return text_words(record["text"])

    def write_shards(
        self, cfg: Config, tokenizer: Any, prepared: Path, specials: dict, checkpoint: dict | None
    ) -> None:
        """Encode ``data/prepared`` into ``data/shards`` (and the pretraining corpus with it),
        with its ``meta.json``, and print the tokenize stage's summary. This default writes
        each record's text with its label's id (:func:`lmforge.data.encode.write_text_shards`)."""
        from lmforge.data.encode import write_text_shards

        write_text_shards(cfg, tokenizer, prepared, specials, checkpoint)

    def baselines(self, cfg: Config) -> dict:
        """Reference scores on the test split (``metrics/baselines.json``), printed; none by
        default."""
        print(f"baselines: none for task={self.name}")
        return {}

    # --- report, export, generate --------------------------------------------------------------

    def report_lines(self, finetune: dict, evaluation: dict, baselines: dict) -> list[str]:
        """The report's lines on finetuning, the test scores and the baselines (each read from
        its ``metrics/*.json``, ``{}`` where the stage has not run)."""
        lines = []
        if self.objective in finetune:
            lines.append(
                f"finetune  {self.objective} {finetune[self.objective]:.4f} ({finetune['epochs']} epochs)"
            )
        if evaluation:
            scores = "  ".join(f"{k} {v:.4f}" for k, v in evaluation.items() if isinstance(v, float))
            lines.append(f"test      {scores}")
        for name, values in baselines.items():
            scores = "  ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float))
            lines.append(f"baseline  {name:<15} {scores}")
        return lines

    def standing(self, evaluation: dict, baselines: dict) -> dict | None:
        """The model's :attr:`headline_metric` on the test split against each baseline's, as
        differences (model minus baseline, the metric's units), the best baseline and whether it
        wins (a tie is no win); :attr:`levers` only where one does. None where the task has no
        headline metric, or the scores do not both carry it. The evaluate stage stores it in
        ``metrics/eval.json`` and logs it; the report prints it (:meth:`standing_lines`)."""
        metric = self.headline_metric
        model = evaluation.get(metric) if metric else None
        if not _is_number(model):
            return None
        scores = {
            name: values[metric]
            for name, values in baselines.items()
            if isinstance(values, dict) and _is_number(values.get(metric))
        }
        if not scores:
            return None
        best = max(scores, key=lambda name: scores[name])
        wins = scores[best] > model
        result = {
            "metric": metric,
            "model": model,
            "vs": {name: model - value for name, value in scores.items()},
            "best_baseline": best,
            "best_baseline_value": scores[best],
            "vs_best": model - scores[best],
            "baseline_wins": wins,
        }
        if wins and self.levers:
            result["levers"] = self.levers
        return result

    def standing_lines(self, standing: dict | None) -> list[str]:
        """The report's lines for a :meth:`standing`: the difference to the best baseline (and
        to the others), then, where a baseline wins, the levers to try."""
        if not standing:
            return []
        points = self.headline_points
        digits = 4 if points > 1 else 2  # a share in 0-1 to 4 places, a 0-100 figure to 2

        def diff(value: float) -> str:
            return f"{value * points:+.2f}"

        best = standing["best_baseline"]
        line = (
            f"standing  test {standing['metric']} {standing['model']:.{digits}f}: "
            f"{diff(standing['vs_best'])} points vs {best} ({standing['best_baseline_value']:.{digits}f}), "
            "the best baseline"
        )
        others = [f"{diff(value)} vs {name}" for name, value in standing["vs"].items() if name != best]
        lines = [line + "".join(f"; {other}" for other in others)]
        if standing.get("baseline_wins") and standing.get("levers"):
            lines.append(f"to try    {standing['levers']}")
        return lines

    def export_target(
        self, config: dict, config_path: Path, weights: Any, base: dict, token_logits: bool
    ) -> Any:
        """The Hugging Face architecture, weights and config of a finetuned model of this task
        (:class:`lmforge.models.export_plan.Target`). ``config``: its ``config.json``; ``weights(name)``
        loads a state dict from its folder; ``base``: the shared MegatronBert config."""
        raise UserError(
            f"{config_path}: task '{self.name}' cannot be exported; export a {exportable_tasks()} model"
        )

    def generator(self, folder: Path, clean: Any) -> Any:
        """A finetuned model of this task that writes text (``generate(texts, cfg.generate)``),
        for ``python -m lmforge.generate``; only where ``generates``."""
        raise UserError(f"{folder} holds a task={self.name} model, which does not generate text")

    def data(self, cfg: Config, meta: dict) -> TaskData:
        raise NotImplementedError

    def module(self, cfg: Config, model_cfg: Any, meta: dict, total_steps: int) -> Any:
        raise NotImplementedError

    def load_pretrained(self, module: Any, folder: Path) -> str:
        """Load the pretrain stage's weights into ``module``; return the file it read."""
        from lmforge.core.io import load_weights, torch_load

        path = folder / "encoder.pt"
        state = torch_load(path, "pretrain")
        # An ensemble (finetune.ensemble) starts every member from the pretrained encoder.
        for member in getattr(module.model, "members", [module.model]):
            load_weights(member.encoder, path, "pretrain", state=state)
        return str(path)

    def model_options(self, cfg: Config, meta: dict) -> dict:
        """What loading the finetuned model needs besides its weights and sizes (label names,
        budgets, ...): stored in its ``config.json``."""
        raise NotImplementedError

    def save(self, module: Any, cfg: Config, meta: dict, out: Path) -> None:
        """``model.pt`` and ``config.json`` (the task, the model's sizes and
        :meth:`model_options`) in the finetuned folder."""
        from dataclasses import asdict

        import torch

        from lmforge.core.io import write_json

        if cfg.model.is_hf:
            save_checkpoint(module.model, cfg, meta, out)
            config = {"task": self.name, **hf_model_record(cfg, meta)}
        else:
            torch.save(module.model.state_dict(), out / "model.pt")
            config = {"task": self.name, "model": asdict(module.model.cfg)}
        write_json(out / "config.json", {**config, **self.model_options(cfg, meta)})

    def before_fit(self, module: Any, data: TaskData, cfg: Config, meta: dict) -> None:
        """Fit what the model holds besides its trained weights, from the task's data (an
        n-gram model to fuse with); called once the module is built."""

    def before_save(self, module: Any, val_loader: Any, cfg: Config, meta: dict) -> dict:
        """Settle what the best checkpoint's model still needs from validation before it is
        saved (an n-gram fusion's weight); figures to log with the finetune metrics."""
        return {}

    def after_fit(self, module: Any, val_loader: Any, cfg: Config, meta: dict) -> dict:
        """Extra validation figures logged to the finetune run (per-class reports, samples);
        files it writes under ``cfg.paths.metrics`` are named in :attr:`finetune_metrics`."""
        return {}

    def log_model(self, cfg: Config, folder: Path) -> Any:
        """Log the finetuned folder as an MLflow pyfunc model (and register it)."""
        raise NotImplementedError

    def evaluate(self, cfg: Config, folder: Path) -> dict:
        """Score the finetuned model on the test split: ``metrics/eval.json``, ``plots/eval/``,
        logged to MLflow by the caller."""
        raise NotImplementedError

    def evaluate_file(self, cfg: Config, folder: Path, path: Path) -> dict:
        """Score the finetuned model on any labelled file read with ``data.source``'s options."""
        raise NotImplementedError


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < float("inf")


def word_vectors_shape(cfg: Config) -> list[int] | None:
    """``[words, dim]`` of the word_vectors stage's output with ``vectors.enabled``, else None
    (stored in a finetuned model's ``config.json`` to rebuild it)."""
    if not cfg.vectors.enabled:
        return None
    from lmforge.core.io import load_json

    meta = load_json(Path(cfg.paths.word_vectors) / "meta.json", "word_vectors")
    return [meta["words"], meta["dim"]]


def eval_plots(cfg: Config) -> Path:
    """The evaluate stage's plot folder (``dvc.yaml`` declares it; every task writes there)."""
    folder = Path(cfg.paths.plots) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_f1_chart(per_class: dict, title: str) -> None:
    """Log per-class (or per-tag) F1 bars to the active MLflow run as ``val_f1.png``."""
    import tempfile

    import mlflow

    from lmforge.metrics.figures import f1_png

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "val_f1.png"
        f1_png(per_class, path, title)
        mlflow.log_artifact(str(path))


def exportable_tasks() -> str:
    """``"a, b or c"``: the tasks that implement ``export_target``."""
    from lmforge.core.task_registry import choices, names, task_class

    return choices([n for n in names() if task_class(n).export_target is not Task.export_target])


def finetuned_task(folder: Path) -> Any:
    """The task a finetuned model folder was trained for (``config.json``'s ``task``; folders
    written before tasks existed are :data:`DEFAULT`)."""
    from lmforge.core.io import load_json
    from lmforge.core.task_registry import DEFAULT, get_task
    from lmforge.lit.workspace import HF_FOLDER

    weights = Path(folder) / HF_FOLDER / "config.json"
    if not weights.is_file():
        weights = Path(folder) / "model.pt"
    for path in (weights, Path(folder) / "config.json"):
        if not path.is_file():
            raise UserError(f"{path} is missing; run the finetune stage first")
    config = Path(folder) / "config.json"
    return get_task(load_json(config, "finetune").get("task", DEFAULT))
