"""Keep ``transformers`` out of processes that do not use it.

torchmetrics imports ``transformers`` at its own import time whenever it is installed (for
``bert_score`` and ``infolm``, which lmforge does not use), and Lightning imports torchmetrics: with
the ``[hf]`` extra installed, every training stage would load ``transformers`` (seconds of start-up
and a large share of memory) for nothing. :func:`install` adds an import hook that, the moment
``torchmetrics.utilities.imports`` has run, marks its ``transformers`` requirement checks as unmet,
so torchmetrics skips those two metrics. lmforge's own ``model=hf`` code imports ``transformers``
directly and is unaffected. The hook costs nothing until torchmetrics is imported; a process that
imported torchmetrics before lmforge keeps torchmetrics' own behaviour.

Set ``LMFORGE_TORCHMETRICS_TRANSFORMERS=1`` to leave torchmetrics alone (its BERTScore and InfoLM
then work in lmforge's processes).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType

TARGET = "torchmetrics.utilities.imports"
ENV = "LMFORGE_TORCHMETRICS_TRANSFORMERS"


def without_transformers(module: ModuleType) -> list[str]:
    """Mark ``module``'s ``_TRANSFORMERS_*`` requirement caches unmet; return their names."""
    marked = []
    for name, value in vars(module).items():
        if name.startswith("_TRANSFORMERS") and hasattr(value, "requirement"):
            value.available = False  # RequirementCache checks only when `available` is unset
            value.message = f"transformers is not loaded by torchmetrics in lmforge (set {ENV}=1)"
            marked.append(name)
    return marked


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        without_transformers(module)


class _Finder(importlib.abc.MetaPathFinder):
    # Marks every copy of this guard, whatever package holds it (a project made from this
    # template has its own): two on sys.meta_path would ask each other for ever.
    guards_transformers = True

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "guards_transformers", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Add the hook once, first on ``sys.meta_path`` (a no-op when the variable opts out)."""
    if os.environ.get(ENV, "") in {"1", "true", "yes"}:
        return
    if not any(getattr(finder, "guards_transformers", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
