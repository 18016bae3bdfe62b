"""PyTorch datasets over token shards: packed sequences for pretraining, records for finetuning."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lmforge.core.errors import UserError
from lmforge.data.tokenization import TokenShards


class TokenStream:
    """A token stream read lazily: ``stream[a:b]`` is :meth:`take`, any other index (a mask, an
    index array) and ``np.asarray(stream)`` build the :meth:`whole` stream first."""

    def __len__(self) -> int:
        raise NotImplementedError

    def take(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def whole(self) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            return self.take(start, stop)
        return self.whole()[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        stream = self.whole()
        return stream if dtype is None else stream.astype(dtype)


class SepJoined(TokenStream):
    """Records joined into one token stream, each followed by ``[SEP]``, read from the shards'
    memory map window by window instead of built in memory.

    Slicing (``stream[a:b]``) returns an ``int64`` array; memory is the ``[SEP]`` positions, one
    int64 a record, never the tokens (the stream built in memory took 8 bytes a token). Any other
    index (a mask, an index array) builds the whole stream first, as ``np.asarray(stream)`` does.
    """

    def __init__(self, ids, offsets: np.ndarray, sep: int) -> None:
        self.ids, self.sep = ids, sep
        offsets = np.asarray(offsets, dtype=np.int64)
        # Record k's [SEP] sits at offsets[k + 1] + k: after its tokens and the k [SEP]s before.
        self.seps = offsets[1:] + np.arange(len(offsets) - 1, dtype=np.int64)
        self.offsets = offsets

    def __len__(self) -> int:
        return int(self.offsets[-1]) + len(self.seps)

    def take(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(len(self), stop)
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        positions = np.arange(start, stop, dtype=np.int64)
        before = np.searchsorted(self.seps, positions)  # [SEP]s before each position
        is_sep = self.seps[np.minimum(before, len(self.seps) - 1)] == positions
        out = np.full(len(positions), self.sep, dtype=np.int64)
        tokens = ~is_sep
        if tokens.any():
            # A window's tokens are one contiguous run of the ids: position p is ids[p - before].
            first = int(positions[tokens][0] - before[tokens][0])
            out[tokens] = self.ids[first : first + int(tokens.sum())]
        return out

    def whole(self) -> np.ndarray:
        return np.insert(np.asarray(self.ids), self.offsets[1:], self.sep).astype(np.int64)


class Chained(TokenStream):
    """Token streams one after the other, sliced as one (the sources, then the targets)."""

    def __init__(self, *parts: SepJoined) -> None:
        self.parts = parts
        self.starts = np.cumsum([0, *(len(p) for p in parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, start: int, stop: int) -> np.ndarray:
        pieces = [
            part.take(start - int(begin), stop - int(begin))
            for part, begin in zip(self.parts, self.starts[:-1], strict=True)
        ]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def whole(self) -> np.ndarray:
        return np.concatenate([p.whole() for p in self.parts])


class PackedSequences(Dataset):
    """The split's records joined by ``[SEP]`` and cut into ``[CLS]``-led windows of ``seq_len``.

    Packing leaves no padding, so every position of every step is a useful token. Windows are
    read from the memory-mapped shards as they are asked for (:class:`SepJoined`): a corpus
    larger than memory packs as well as a small one.
    """

    def __init__(self, shards: TokenShards, seq_len: int) -> None:
        sep, cls = shards.meta["special_ids"]["sep"], shards.meta["special_ids"]["cls"]
        # One [SEP] after every record.
        self.stream: SepJoined | Chained | np.ndarray = SepJoined(shards.ids, shards.offsets, sep)
        if shards.has_targets:
            # Text-to-text data: the targets follow as records of their own, never next to their
            # source, so pretraining sees both languages' text without the pairing.
            self.stream = Chained(self.stream, SepJoined(shards.target_ids, shards.target_offsets, sep))
        self.window = seq_len - 1
        self.cls = cls
        if len(self.stream) < self.window:
            raise UserError(
                f"{shards.path}: only {len(self.stream)} tokens, fewer than one "
                f"sequence of {seq_len}; lower pretrain.seq_len or add text"
            )

    def __len__(self) -> int:
        return len(self.stream) // self.window

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.window
        window = self.stream[start : start + self.window]
        return torch.from_numpy(np.concatenate(([self.cls], window)).astype(np.int64))


class LabelledRecords(Dataset):
    """Each labelled record as ``[CLS] ids [SEP]``, truncated to ``max_len``, with its class.
    ``input_len`` (longer than ``max_len``): the records are cut there instead, for a model that
    reads more of a text than its encoder (an n-gram model beside it); ``lengths`` and
    ``truncated`` still count against ``max_len``, what the encoder reads."""

    def __init__(self, shards: TokenShards, max_len: int, input_len: int | None = None) -> None:
        self.shards = shards
        self.rows = np.flatnonzero(shards.labels >= 0)
        special = shards.meta["special_ids"]
        self.cls, self.sep, self.pad = special["cls"], special["sep"], special["pad"]
        self.max_len = max_len
        self.input_len = max(max_len, input_len or 0)

    @property
    def lengths(self) -> np.ndarray:
        """Each record's framed length (with [CLS] and [SEP], after truncation)."""
        return np.minimum(np.diff(self.shards.offsets)[self.rows] + 2, self.max_len)

    @property
    def truncated(self) -> int:
        """How many records are longer than ``max_len`` and lose their tail."""
        lengths = np.diff(self.shards.offsets)[self.rows]
        return int((lengths > self.max_len - 2).sum())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.rows[index]
        return frame_record(self.shards.record(row), self.input_len, self.cls, self.sep), int(
            self.shards.labels[row]
        )


def frame_record(ids, max_len: int, cls: int, sep: int) -> torch.Tensor:
    """``[CLS] ids [SEP]``, the ids truncated so the whole fits in ``max_len``."""
    body = np.asarray(ids[: max_len - 2], dtype=np.int64)
    return torch.from_numpy(np.concatenate(([cls], body, [sep])))


def pad_batch(items: list[tuple[torch.Tensor, int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch (not to max_len) and build the attention mask."""
    longest = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    lengths = torch.tensor([len(ids) for ids, _ in items])
    for row, (ids, _) in enumerate(items):
        input_ids[row, : len(ids)] = ids
    # From lengths, not `!= pad_id`: raw text can spell a special token.
    attention_mask = torch.arange(longest)[None, :] < lengths[:, None]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([label for _, label in items], dtype=torch.long),
    }


def length_grouped_order(lengths, batch_size: int, generator: torch.Generator, group: int = 50) -> list[int]:
    """A shuffled order in which each run of ``batch_size`` indices holds texts of similar length.

    Padding to the longest text in a batch wastes most of a batch of short and long texts alike
    (SST-2's train phrases: 13.5 tokens on average, 46 padded per random batch of 64). As in
    Hugging Face's ``group_by_length``: shuffle, cut into groups of ``group`` batches, sort each
    group by length, cut it into batches and shuffle the batches, so batches stay random in
    content and order while their lengths are nearly uniform. A short last batch stays last, so
    every batch the DataLoader cuts from this order is one of these batches.
    """
    lengths = torch.as_tensor(np.asarray(lengths))
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for start in range(0, len(order), batch_size * group):
        chunk = order[start : start + batch_size * group]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat(shuffled + tail).tolist() if shuffled or tail else []


class SourceTargetPairs(Dataset):
    """Each (source, target) record of a text-to-text split as two id arrays, truncated to the
    task's budgets (``max_source_len``, ``max_target_len`` tokens; the special tokens framing
    them come on top). How many were cut is counted, never silent."""

    def __init__(self, shards: TokenShards, max_source_len: int, max_target_len: int) -> None:
        if not shards.has_targets:
            raise UserError(
                f"{shards.path.parent}: the shards hold no targets; a text-to-text "
                "task needs a source with a target (data.source.target_column or "
                "data.source.parallel)"
            )
        self.shards = shards
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.source_lengths = np.diff(shards.offsets)
        self.target_lengths = np.diff(shards.target_offsets)

    @property
    def lengths(self) -> np.ndarray:
        """Each example's framed length: ``[CLS] source [SEP] target [SEP]`` after truncation."""
        return (
            np.minimum(self.source_lengths, self.max_source_len)
            + np.minimum(self.target_lengths, self.max_target_len)
            + 3
        )

    @property
    def truncated_sources(self) -> int:
        return int((self.source_lengths > self.max_source_len).sum())

    @property
    def truncated_targets(self) -> int:
        return int((self.target_lengths > self.max_target_len).sum())

    def __len__(self) -> int:
        return len(self.source_lengths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray(self.shards.record(index)[: self.max_source_len], dtype=np.int64),
            np.asarray(self.shards.target_record(index)[: self.max_target_len], dtype=np.int64),
        )
