"""Frozen distributional word vectors (:mod:`lmforge.word_vectors`) inside lmforge's own models.

:class:`WordVectors` looks vectors up by an integer word key. Where the key comes from depends
on what the data holds:

- the tagger reads words, so its key is the hash of the lower-cased word, a column of its word
  features (:func:`lmforge.data.tagging.word_key`);
- a classifier reads token ids only, so :class:`TokenWordKeys` derives the key from the ids: a
  word is a run of tokens from one that starts a word (byte-level BPE's space-prefixed ``Ġ``
  tokens, WordPiece's tokens without ``##``) to the next, and its key is a polynomial hash of
  its ids, put at its first token. A vector word's key is the same hash of the ids the tokenizer
  gives the word on its own (:func:`token_word_keys`): BPE merges and WordPiece splits never
  cross a pre-token boundary, so a word is encoded the same on its own as in running text.
  Nothing but the ids is needed, so finetuning, evaluation, ``eval.file`` and the served model
  all key words the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

# The word hash: sum over the word's tokens k = 0, 1, ... of (id_k + 1) * BASE**k, modulo a
# prime; + 1, so a key is never 0 (0: no word here). (id + 1) * power < 2**48 and a sum of a
# few hundred such terms stays far inside int64.
MODULUS = 2**31 - 1
BASE = 1_000_003
CONTINUATION, WORD_START, SPECIAL = 0, 1, 2


def word_hash(ids: Sequence[int]) -> int:
    """The key of a word made of these token ids (:class:`TokenWordKeys` computes the same)."""
    total, power = 0, 1
    for token in ids:
        total = (total + (int(token) + 1) * power) % MODULUS
        power = power * BASE % MODULUS
    return total + 1


def token_kinds(tokenizer, special_ids: Iterable[int]) -> torch.Tensor:
    """Per vocabulary id: :data:`WORD_START`, :data:`CONTINUATION` or :data:`SPECIAL`."""
    from lmforge.core.errors import UserError

    kind = json.loads(tokenizer.to_str())["model"]["type"]
    if kind not in ("BPE", "WordPiece"):
        raise UserError(f"word vectors need a BPE or WordPiece tokenizer to find words, not {kind}")
    kinds = torch.full((tokenizer.get_vocab_size(),), CONTINUATION, dtype=torch.long)
    for token, index in tokenizer.get_vocab().items():
        starts = token.startswith("Ġ") if kind == "BPE" else not token.startswith("##")
        if starts:
            kinds[index] = WORD_START
    for index in special_ids:
        kinds[index] = SPECIAL
    return kinds


def _word_char(char: str) -> bool:
    """A letter, digit or underscore; or a byte-level BPE character 128-255, which spells a
    byte of a non-ASCII character (256 and up spell spaces and control bytes)."""
    return char.isalnum() or char == "_" or 128 <= ord(char) < 256


def token_edges(tokenizer) -> torch.Tensor:
    """Per vocabulary id, ``[first, last]``: whether the token's first and last character is a
    word character (1) or not (0: punctuation, a space), its word-start marker (``Ġ``, ``##``)
    left out; ``[-1, -1]`` for a token with no text besides it. :class:`TokenWordKeys` given
    them starts a word where a token's first character and the one before it differ in kind, as
    a word tokenizer splits ``good.`` and ``(good)`` from ``good``."""
    edges = torch.full((tokenizer.get_vocab_size(), 2), -1, dtype=torch.long)
    for token, index in tokenizer.get_vocab().items():
        text = token[1:] if token.startswith("Ġ") else token[2:] if token.startswith("##") else token
        if text:
            edges[index] = torch.tensor([_word_char(text[0]), _word_char(text[-1])])
    return edges


def token_word_keys(tokenizer, words: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys of ``words`` as :class:`TokenWordKeys` finds them in text, and for each key its
    word's row: a word's lower-case form and, where the tokenizer keeps case, its capitalised
    form ("the" and "The") share a row."""
    keys: dict[int, int] = {}
    for row, word in enumerate(words):
        for form in dict.fromkeys((word, word.capitalize())):
            ids = tokenizer.encode(form, add_special_tokens=False).ids
            if ids:
                keys.setdefault(word_hash(ids), row)
    return torch.tensor(list(keys), dtype=torch.long), torch.tensor(list(keys.values()), dtype=torch.long)


class WordVectors(nn.Module):
    """Frozen vectors looked up by word key: ``table`` row ``rows[i]`` belongs to the i-th of the
    sorted ``keys``. Keys and rows are extra state, not buffers: a weight average
    (``finetune.ema_decay``) averages buffers too, which would corrupt integers."""

    def __init__(self, count: int, dim: int) -> None:
        super().__init__()
        self.keys = torch.zeros(count, dtype=torch.long)
        self.rows = torch.arange(count)
        self.register_buffer("table", torch.zeros(count, dim))

    def set(self, keys: torch.Tensor, table: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """``keys[i]`` looks up ``table[rows[i]]`` (``rows`` defaults to ``keys``' own order)."""
        rows = torch.arange(len(keys)) if rows is None else rows
        order = keys.argsort()
        self.keys = keys[order].clone()
        self.rows = rows[order].clone()
        self.table.copy_(table)

    def get_extra_state(self) -> dict:
        return {"keys": self.keys, "rows": self.rows}

    def set_extra_state(self, state: dict) -> None:
        self.keys = state["keys"]
        self.rows = state.get("rows", torch.arange(len(self.keys)))  # taggers saved before rows

    def forward(self, keys: torch.Tensor) -> torch.Tensor:
        """[B, T] word keys (0: no word) -> [B, T, dim] their vectors, zeros for words without one."""
        if self.keys.device != keys.device:
            self.keys, self.rows = self.keys.to(keys.device), self.rows.to(keys.device)
        index = torch.searchsorted(self.keys, keys.contiguous()).clamp(max=max(len(self.keys) - 1, 0))
        hit = (self.keys[index] == keys) & (keys > 0)
        return self.table[self.rows[index]] * hit.unsqueeze(-1).to(self.table.dtype)


class TokenWordKeys(nn.Module):
    """[B, T] token ids -> [B, T] word keys: at each word's first token the hash of the word's ids
    (:func:`word_hash`), 0 elsewhere, at special tokens and for runs that follow one without a
    word start. ``kinds`` (per vocabulary id, :func:`token_kinds`) is extra state, and so are
    ``edges`` when set (:func:`token_edges`): then a word also starts where a token's first
    character differs in kind from the last one before it (``good`` and ``.`` of ``good.``, or
    the first word after a special token), as in a word tokenizer's split of raw text."""

    def __init__(self, vocab_size: int, max_len: int) -> None:
        super().__init__()
        self.kinds = torch.zeros(vocab_size, dtype=torch.long)
        self.edges: torch.Tensor | None = None
        powers = [1]
        for _ in range(max_len - 1):
            powers.append(powers[-1] * BASE % MODULUS)
        self.powers = torch.tensor(powers, dtype=torch.long)

    def set(self, kinds: torch.Tensor, edges: torch.Tensor | None = None) -> None:
        self.kinds = kinds.clone()
        self.edges = None if edges is None else edges.clone()

    def get_extra_state(self) -> dict:
        return {"kinds": self.kinds} if self.edges is None else {"kinds": self.kinds, "edges": self.edges}

    def set_extra_state(self, state: dict) -> None:
        self.kinds = state["kinds"]
        self.edges = state.get("edges")  # absent from models saved before edges existed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kinds.device != ids.device:
            self.kinds, self.powers = self.kinds.to(ids.device), self.powers.to(ids.device)
        if self.edges is not None and self.edges.device != ids.device:
            self.edges = self.edges.to(ids.device)
        batch, length = ids.shape
        kind = self.kinds[ids]
        start = kind != CONTINUATION
        word = kind == WORD_START
        if self.edges is not None:
            edges = self.edges[ids]
            change = torch.zeros_like(start)
            change[:, 1:] = (edges[:, 1:, 0] != edges[:, :-1, 1]) | (kind[:, :-1] == SPECIAL)
            start = start | change
            word = (kind != SPECIAL) & (edges[..., 0] >= 0)  # a bare space marker is no word
        start[:, 0] = True
        segment = start.long().cumsum(dim=1) - 1  # which run each token belongs to
        position = torch.arange(length, device=ids.device).expand(batch, length)
        offset = position - torch.where(start, position, 0).cummax(dim=1).values
        # A word longer than the powers (max_len tokens: only in a text longer than max_len,
        # as the n-gram model reads) reuses the last power past it.
        terms = (ids.long() + 1) * self.powers[offset.clamp(max=len(self.powers) - 1)]
        sums = torch.zeros(batch, length, dtype=torch.long, device=ids.device).scatter_add_(1, segment, terms)
        keys = sums.gather(1, segment) % MODULUS + 1
        return torch.where(start & word, keys, 0)


def load_word_vectors(cfg: Any) -> tuple[list[str], Any]:
    """The word_vectors stage's words and vectors (:mod:`lmforge.word_vectors`); a clear error
    when it has not written them."""
    from pathlib import Path

    from lmforge.core.errors import UserError
    from lmforge.core.io import load_json, load_npy

    folder = Path(cfg.paths.word_vectors)
    meta_path = folder / "meta.json"
    meta = load_json(meta_path, "word_vectors") if meta_path.exists() else {}
    if not meta.get("enabled"):
        raise UserError(
            f"{folder} holds no word vectors but vectors.enabled=true; run the word_vectors stage "
            "first (dvc repro word_vectors)"
        )
    words = load_json(folder / "vocab.json", "word_vectors")
    vectors = load_npy(folder / "vectors.npy", "word_vectors")
    if list(vectors.shape) != [len(words), meta.get("dim")] or len(words) != meta.get("words"):
        raise UserError(
            f"{folder / 'vectors.npy'} holds {'x'.join(map(str, vectors.shape))} vectors but meta.json and "
            f"vocab.json say {meta.get('words')} words of {meta.get('dim')}; rerun the word_vectors stage "
            "(dvc repro word_vectors)"
        )
    return words, vectors
