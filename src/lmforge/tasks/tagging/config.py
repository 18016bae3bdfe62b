"""``task.*`` keys of task=tagging (light: stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.core.config import TaskConfig, _check


@dataclass
class TaggingConfig(TaskConfig):
    name: str = "tagging"
    # Hashed features of each word (prefixes, suffixes, shape) summed into its first subword's
    # input embedding, in a table of this many rows; 0 turns them off.
    word_feature_buckets: int = 0
    # A character CNN with this many filters over each word's characters, added to its first
    # subword's input embedding like the hashed features (0: none).
    char_cnn: int = 0
    # A BiLSTM of this many units each way over the encoder's output (0: none).
    context_lstm: int = 0
    # That BiLSTM steps over every subword, or over the words (first subwords) only.
    context_over: str = "subwords"
    # While training, each text subword becomes [UNK] with this probability.
    word_dropout: float = 0.0

    def __post_init__(self) -> None:
        _check(self.context_lstm >= 0, "task.context_lstm", "must be >= 0 (0 turns the BiLSTM off)")
        _check(
            self.context_over in ("subwords", "words"),
            "task.context_over",
            f"'{self.context_over}' is not one of subwords, words",
        )
        _check(0.0 <= self.word_dropout < 1.0, "task.word_dropout", "must be in [0, 1)")
        _check(self.char_cnn >= 0, "task.char_cnn", "must be >= 0 (0 turns the character CNN off)")
        _check(
            self.word_feature_buckets >= 0,
            "task.word_feature_buckets",
            "must be >= 0 (0 turns word features off)",
        )
