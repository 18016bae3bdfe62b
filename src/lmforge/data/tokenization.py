"""Train a tokenizer with `tokenizers` and encode prepared text into token shards on disk.

A shard set for one split is three files:

- ``{split}.ids.bin``: every record's token ids back to back (no special tokens), as a numpy
  memmap of ``uint16`` when the vocabulary fits, else ``uint32``;
- ``{split}.offsets.npy``: ``int64[n + 1]``, record ``i`` is ``ids[offsets[i]:offsets[i + 1]]``;
- ``{split}.labels.npy``: ``int64[n]``, the class index, or -1 for unlabelled text.

Text-to-text data (records with a ``target``) adds two files per split, in the same layout:
``{split}.target_ids.bin`` and ``{split}.target_offsets.npy`` (record ``i``'s target is
``target_ids[target_offsets[i]:target_offsets[i + 1]]``); the source and target share one
vocabulary, and ``meta.json`` says ``"targets": true``. The labels are then all -1.

Datasets add ``[CLS]``/``[SEP]`` themselves, so the same shards serve packed pretraining and
per-record classification.
"""

from __future__ import annotations

import hashlib
import shutil
from array import array
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from lmforge.core.config import TokenizerConfig
from lmforge.core.errors import UserError
from lmforge.core.io import load_json, load_npy

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]


def build_tokenizer(cfg: TokenizerConfig):
    """An untrained tokenizer and its trainer, both from the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if cfg.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        # Byte-level: any string encodes, nothing maps to [UNK].
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    steps = [normalizers.NFKC()]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer, trainer


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig, length: int | None = None):
    tokenizer, trainer = build_tokenizer(cfg)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    for position, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == position, "special tokens must come first"
    return tokenizer


def in_sample(text: str, fraction: float) -> bool:
    """Whether ``text`` is in a ``fraction`` sample of texts, decided by a hash of the text alone
    (the same texts on every run, whatever their order or the corpus around them)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=b"tokenizer-sample").digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def special_ids() -> dict[str, int]:
    """Special tokens are added first when training, so their ids are fixed."""
    return {token.strip("[]").lower(): position for position, token in enumerate(SPECIAL_TOKENS)}


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class Int64Writer:
    """Append int64 values to a ``.npy`` file without holding them: they go to ``{path}.part`` in
    chunks of ``chunk`` values, and :meth:`close` writes the ``.npy`` header (whose shape needs
    the final count) and copies them after it. Memory is one chunk, whatever the count."""

    def __init__(self, path: Path, chunk: int = 1 << 16) -> None:
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        # Open for the writer's lifetime; close() closes it.
        self._file = open(self._part, "wb")  # noqa: SIM115
        self._buffer = array("q")
        self._chunk = chunk
        self.count = 0

    def extend(self, values: Iterable[int]) -> None:
        before = len(self._buffer)
        self._buffer.extend(values)
        self.count += len(self._buffer) - before
        if len(self._buffer) >= self._chunk:
            self._flush()

    def append(self, value: int) -> None:
        self._buffer.append(value)
        self.count += 1
        if len(self._buffer) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._buffer.tobytes())
        del self._buffer[:]

    def close(self) -> None:
        self._flush()
        self._file.close()
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype("<i8")),
            "fortran_order": False,
            "shape": (self.count,),
        }
        with open(self.path, "wb") as out, open(self._part, "rb") as part:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(part, out, 1 << 20)
        self._part.unlink()


def encode_to_shards(
    tokenizer,
    records: Iterator[tuple[str, int]],
    out_dir: Path,
    split: str,
    batch_size: int = 4096,
    progress=None,
) -> dict:
    """Stream ``(text, label_index)`` pairs into one split's shard files; return its counts.

    Memory holds one batch of text and its encodings, never the corpus: offsets and labels go to
    disk as they are made (:class:`Int64Writer`). Larger
    batches keep the tokenizer's worker threads busier (measured: 2,048 records ~0.76x of one
    ``encode_batch`` call over everything, 32,768 ~1.08x) but raise the memory floor; 4,096 is
    the compromise (bench/data_path.py).
    """
    labels = Int64Writer(out_dir / f"{split}.labels.npy")
    labelled = 0

    def texts() -> Iterator[str]:
        nonlocal labelled
        for text, label in records:
            labels.append(label)
            labelled += label >= 0
            yield text

    total = encode_texts(
        tokenizer,
        texts(),
        out_dir / f"{split}.ids.bin",
        out_dir / f"{split}.offsets.npy",
        batch_size,
        progress,
    )
    labels.close()
    return {"records": labels.count, "tokens": total, "labelled": labelled}


def encode_targets_to_shards(
    tokenizer, targets: Iterator[str], out_dir: Path, split: str, batch_size: int = 4096, progress=None
) -> dict:
    """Stream one split's target texts into ``{split}.target_ids.bin``/``target_offsets.npy``."""
    offsets_path = out_dir / f"{split}.target_offsets.npy"
    total = encode_texts(
        tokenizer, targets, out_dir / f"{split}.target_ids.bin", offsets_path, batch_size, progress
    )
    return {"target_records": len(np.load(offsets_path, mmap_mode="r")) - 1, "target_tokens": total}


def encode_texts(
    tokenizer, texts: Iterable[str], ids_path: Path, offsets_path: Path, batch_size: int = 4096, progress=None
) -> int:
    """Encode texts back to back into ``ids_path`` and their offsets into ``offsets_path``;
    return the number of tokens written."""
    dtype = ids_dtype(tokenizer.get_vocab_size())
    offsets = Int64Writer(offsets_path)
    offsets.append(0)
    total = 0
    with open(ids_path, "wb") as ids_file:
        batch: list[str] = []

        def flush() -> None:
            nonlocal total
            # One array and one write per batch: per-record numpy calls cost more than encoding.
            token_lists = [e.ids for e in tokenizer.encode_batch_fast(batch, add_special_tokens=False)]
            lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
            flat = np.fromiter(chain.from_iterable(token_lists), dtype=dtype, count=int(lengths.sum()))
            ids_file.write(flat.tobytes())
            offsets.extend((total + np.cumsum(lengths)).tolist())
            total += len(flat)
            if progress is not None:
                progress.update(len(batch))
            batch.clear()

        for text in texts:
            batch.append(text)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    offsets.close()
    return total


def check_index(path: Path, offsets: np.ndarray, tokens: int, records: int) -> None:
    """A split's offsets fit its ids and records (cheap: the ends only): a truncated or garbled
    index, or ids file, is one line naming the file."""
    ends = (int(offsets[0]), int(offsets[-1])) if offsets.ndim == 1 and len(offsets) else None
    if ends != (0, tokens) or len(offsets) != records + 1:
        raise UserError(
            f"{path} does not fit its shard ({len(offsets) - 1} records ending at token "
            f"{ends[1] if ends else '?'}; the shard holds {records} records of {tokens} "
            "tokens): truncated or corrupt; rerun the tokenize stage (dvc repro tokenize)"
        )


class TokenShards:
    """Read-only view of one split's shards (memory-mapped, nothing loaded up front)."""

    def __init__(self, shard_dir: str | Path, split: str) -> None:
        shard_dir = Path(shard_dir)
        self.path = shard_dir / f"{split}.ids.bin"
        meta = load_json(shard_dir / "meta.json", "tokenize")
        self.meta = meta
        self.ids = np.memmap(shard_dir / f"{split}.ids.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        self.offsets = load_npy(shard_dir / f"{split}.offsets.npy", "tokenize")
        self.labels = load_npy(shard_dir / f"{split}.labels.npy", "tokenize")
        check_index(shard_dir / f"{split}.offsets.npy", self.offsets, len(self.ids), len(self.labels))
        self.has_targets = bool(meta.get("targets", False))
        if self.has_targets:
            target_path = shard_dir / f"{split}.target_ids.bin"
            # np.memmap cannot map an empty file (a split with no records).
            self.target_ids = (
                np.memmap(target_path, dtype=np.dtype(meta["dtype"]), mode="r")
                if target_path.stat().st_size
                else np.zeros(0, dtype=np.dtype(meta["dtype"]))
            )
            self.target_offsets = load_npy(shard_dir / f"{split}.target_offsets.npy", "tokenize")
            targets = shard_dir / f"{split}.target_offsets.npy"
            check_index(targets, self.target_offsets, len(self.target_ids), len(self))

    def __len__(self) -> int:
        return len(self.labels)

    def record(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def target_record(self, index: int) -> np.ndarray:
        """The target token ids of record ``index`` (text-to-text shards only)."""
        if not self.has_targets:
            raise ValueError(
                f"{self.path.parent}: these shards hold no targets "
                "(classification data); check has_targets first"
            )
        return self.target_ids[self.target_offsets[index] : self.target_offsets[index + 1]]
