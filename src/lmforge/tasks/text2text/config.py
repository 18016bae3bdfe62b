"""``task.*`` keys of task=text2text (light: stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.core.config import TaskConfig, _check


@dataclass
class TextToTextConfig(TaskConfig):
    """Budgets in tokens: longer sources and targets are truncated and counted."""

    name: str = "text2text"
    max_source_len: int = 80
    max_target_len: int = 45
    # The source attends to itself both ways (prefix LM, Zhang et al. 2022), the target
    # causally; false masks the source causally too (a plain decoder-only LM).
    prefix_lm: bool = True
    # Read each source with the nearest training pair's target in front of it
    # (``target || source``, TF-IDF over the train sources; lmforge.data.retrieval). The neighbour
    # counts against max_source_len.
    retrieval: bool = False

    def __post_init__(self) -> None:
        _check(self.max_source_len > 0, "task.max_source_len", "must be positive")
        _check(self.max_target_len > 0, "task.max_target_len", "must be positive")
