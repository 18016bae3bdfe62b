"""Scores and figures the scoring code writes: text metrics (``text``) and confusion
matrices (``figures``)."""
