"""The task axis: what differs between classification, text-to-text and tagging, each
in one place, so the stages (``finetune``, ``evaluate``, ``generate``), the registry, sweeps and
DVC stay ignorant of which task runs.

A task owns exactly: how token shards become training examples and batches, the LightningModule
(head and loss), the validation figure that picks the best checkpoint, the finetuned model's
files, its metrics on a split or a file, and the MLflow pyfunc model it registers. Modelled on
fairseq's ``tasks/`` (a task builds its datasets, model and scoring; models know nothing of
data), without its registries: ``TASKS`` below is the whole list.

This module imports nothing heavy: tasks import torch, Lightning and MLflow inside methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import Config


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


class Task:
    """The interface every task implements (see the module docstring)."""

    name: str = ""
    # What finetune logs, returns (the objective of Hydra/Optuna sweeps) and promote ranks by.
    objective: str = ""
    # The Lightning metric that picks the best checkpoint and drives early stopping.
    monitor: str = ""
    mode: str = "max"

    def data(self, cfg: Config, meta: dict) -> TaskData:
        raise NotImplementedError

    def module(self, cfg: Config, model_cfg: Any, meta: dict, total_steps: int) -> Any:
        raise NotImplementedError

    def load_pretrained(self, module: Any, folder: Path) -> str:
        """Load the pretrain stage's weights into ``module``; return the file it read."""
        import torch

        path = folder / "encoder.pt"
        module.model.encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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

        from lmforge.io import write_json

        torch.save(module.model.state_dict(), out / "model.pt")
        config = {"task": self.name, "model": asdict(module.model.cfg)}
        write_json(out / "config.json", {**config, **self.model_options(cfg, meta)})

    def after_fit(self, module: Any, val_loader: Any, cfg: Config, meta: dict) -> dict:
        """Extra validation figures logged to the finetune run (per-class reports, samples)."""
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


def eval_plots(cfg: Config) -> Path:
    """The evaluate stage's plot folder (``dvc.yaml`` declares it; every task writes there)."""
    folder = Path(cfg.paths.plots) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def get_task(name: str) -> Task:
    from lmforge.errors import UserError

    if name == "classification":
        from lmforge.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "text2text":
        from lmforge.tasks.text2text import TextToTextTask

        return TextToTextTask()
    if name == "tagging":
        from lmforge.tasks.tagging import TaggingTask

        return TaggingTask()
    raise UserError(f"unknown task '{name}'; use task=classification, task=text2text or task=tagging")


def finetuned_task(folder: Path) -> Task:
    """The task a finetuned model folder was trained for (``config.json``'s ``task``; folders
    written before tasks existed are classifiers)."""
    import json

    from lmforge.errors import UserError

    for name in ("model.pt", "config.json"):
        if not (Path(folder) / name).is_file():
            raise UserError(f"{Path(folder) / name} is missing; run the finetune stage first")
    config = Path(folder) / "config.json"
    return get_task(json.loads(config.read_text()).get("task", "classification"))
