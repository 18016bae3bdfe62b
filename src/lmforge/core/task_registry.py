"""Which tasks exist: ``task=NAME`` to its :class:`~lmforge.tasks.base.Task` class.

Tasks come from the ``lmforge.tasks`` entry point group (``NAME = "package.module:TaskClass"``
in a package's ``[project.entry-points."lmforge.tasks"]``), so a task can live outside lmforge;
the built-in ones are declared there too, and :data:`BUILTIN` keeps them working from a checkout
whose installed metadata predates the group. An entry point of a built-in name overrides it.
This is the one module outside ``tasks/<name>/`` that names the built-in tasks.

Light: the standard library only; a task class is imported when first asked for (task packages
import nothing heavy at module level).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from lmforge.core.errors import UserError

GROUP = "lmforge.tasks"
# The task of a config that names none, and of model folders written before tasks existed.
DEFAULT = "classification"
BUILTIN = {
    "classification": "lmforge.tasks.classification:ClassificationTask",
    "tagging": "lmforge.tasks.tagging:TaggingTask",
    "text2text": "lmforge.tasks.text2text:TextToTextTask",
}


@cache
def task_specs() -> dict[str, str]:
    """``{name: "module:Class"}`` of every known task: the built-ins, then entry points."""
    from importlib.metadata import entry_points

    specs = dict(BUILTIN)
    for point in entry_points(group=GROUP):
        specs[point.name] = point.value
    return specs


def names() -> list[str]:
    return sorted(task_specs())


def choices(words: list[str], joiner: str = "or") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {joiner} {words[-1]}"


@cache
def task_class(name: str) -> type:
    """The Task class registered as ``name``; a one-line error listing the valid names."""
    spec = task_specs().get(name)
    if spec is None:
        valid = choices([f"task={n}" for n in names()])
        raise UserError(f"unknown task '{name}'; use {valid}")
    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"task '{name}': cannot load {spec} ({exc})") from None
    if cls.name != name:
        raise UserError(f"task '{name}': {spec} says its name is '{cls.name}'; make them agree")
    return cls


def get_task(name: str) -> Any:
    return task_class(name)()


def tasks_that(capability: str) -> list[str]:
    """The names of the tasks whose class sets ``capability`` true (config checks' hints)."""
    return [n for n in names() if getattr(task_class(n), capability, False)]
