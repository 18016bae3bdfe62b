"""``task.*`` keys of task=classification: none besides ``name`` (light: stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.core.config import TaskConfig


@dataclass
class ClassificationConfig(TaskConfig):
    """One label per text: a pooled head over the encoder, cross-entropy, accuracy and macro
    P/R/F1; its options are the finetune group's (``finetune.pooling``, ``finetune.ensemble``)."""

    name: str = "classification"
