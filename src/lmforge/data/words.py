"""Running text into words as the treebanks split them (the word_vectors stage, and every task
whose records are plain text)."""

from __future__ import annotations

import re

# "don't" -> "do", "n't"; "U.S." and "e-mail" whole; every other punctuation mark on its own.
WORD = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w+(?:[-.]\w+)*|[^\w\s]")


def text_words(text: str) -> list[str]:
    return WORD.findall(text)
