"""An alias kept for MLflow models registered before tasks existed: they pickled
``lmforge.registry.TextClassifier``, which now lives in :mod:`lmforge.tasks.classification.pyfunc`
(the registry itself is :mod:`lmforge.tracking.registry`)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "TextClassifier":
        from lmforge.tasks.classification.pyfunc import TextClassifier

        return TextClassifier
    raise AttributeError(name)
