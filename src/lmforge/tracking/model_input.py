"""What a served model is sent: the texts of an MLflow pyfunc request, whatever shape they come in.

Below both :mod:`lmforge.tracking.registry` (which logs the models) and the tasks' pyfunc models (which
read requests), so neither imports the other for it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def model_texts(model_input: Any) -> list[str]:
    """The texts of a pyfunc request: a DataFrame (its ``text`` column, else the first), a
    Series, a string, ``{"text": [...]}`` or a list."""
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict) and "text" in model_input:
        return model_texts(list(model_input["text"]))
    return [str(t) for t in model_input]
