"""The stages, the config schema and export never name a task: what differs by task lives in
``src/lmforge/tasks/<name>/`` behind the Task hooks, and only the registry
(``lmforge/core/task_registry.py``) lists the built-in ones."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"
# Whole words only: MegatronBertForTokenClassification is an architecture, not a task.
TASK_NAMES = re.compile(r"(?<![a-z])(classification|tagging|text2text)(?![a-z])", re.IGNORECASE)


REGISTRY = SRC / "core" / "task_registry.py"
TASKS = SRC / "tasks"


def checked_modules() -> list[Path]:
    """Every stage module (``python -m lmforge.<stage>``: a ``__main__`` guard), the core layer
    (config.py, the front door, ...) but the registry, and every export*.py."""
    stages = [p for p in SRC.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()]
    return sorted(
        {
            *stages,
            *(SRC / "core").glob("*.py"),
            *(p for p in SRC.rglob("export*.py") if TASKS not in p.parents),
        }
        - {REGISTRY}
    )


def test_stages_config_and_export_name_no_task() -> None:
    modules = checked_modules()
    for expected in ("prepare.py", "core/config.py", "core/cli.py", "export.py", "models/export_plan.py"):
        assert SRC / expected in modules, expected
    hits = [
        f"{path.relative_to(SRC.parent)}:{number}: {line.strip()}"
        for path in modules
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TASK_NAMES.search(line)
    ]
    assert not hits, "task names outside src/lmforge/tasks/:\n" + "\n".join(hits)


def test_classification_and_text2text_refuse_records_that_mix_targets_and_labels(tmp_path: Path) -> None:
    import pytest

    from lmforge.core.errors import UserError
    from lmforge.core.task_registry import get_task

    for name in ("classification", "text2text"):
        tally = get_task(name).prepare_tally(None)
        tally.add("train", {"text": "a", "label": "x"})
        tally.add("train", {"text": "b", "target": "y"})
        with pytest.raises(UserError, match="records mix targets"):
            tally.check(tmp_path / "raw", ["x", "z"])
        fine = get_task(name).prepare_tally(None)
        fine.add("train", {"text": "a", "label": "x"})
        fine.check(tmp_path / "raw", ["x", "z"])
