"""Reference scores on the same test split, from the task
(:meth:`lmforge.tasks.base.Task.baselines`): e.g. majority class and TF-IDF + logistic
regression for one label per text, the lead and retrieval baselines for text-to-text data, the
most frequent tag per word form for word-tagged data.

They put the Transformer's figure in context: ``metrics/baselines.json``.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.core.cli import stage
from lmforge.core.config import Config
from lmforge.core.errors import UserError
from lmforge.core.io import write_json
from lmforge.core.task_registry import get_task


def run(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    if not (prepared / "train.jsonl").is_file():
        raise UserError(f"{prepared} is incomplete; run the prepare stage first (dvc repro prepare)")
    results = get_task(cfg.task.name).baselines(cfg)
    write_json(Path(cfg.paths.metrics) / "baselines.json", results)


main = stage(run)

if __name__ == "__main__":
    main()
