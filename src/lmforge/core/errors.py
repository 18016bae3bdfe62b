"""User-facing errors: one line that names the file, row or key at fault and the fix."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or config, reported in one line without a traceback.

    The message must name what is at fault (file, row, column or config key) and how to fix it,
    e.g. ``data/x.csv row 12: column 'label' is empty; fill it or drop the row``.
    """
