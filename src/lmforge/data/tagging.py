"""Word-tagged sentences as subword tokens: encoding, shards, context windows and batches.

**Alignment.** A sentence's words are encoded pre-split (``is_pretokenized=True``): the byte-level
BPE tokenizer then adds its prefix space to every word, exactly as it does inside running text
(``"the dog"`` and ``["the", "dog"]`` give the same ids), and the encoding's word ids say which
subwords belong to which word. A word that encodes to nothing is given ``[UNK]``, so every word
has at least one subword. The model reads each word's **first** subword; the others carry the
label -100 (ignored by the loss) and predictions are read back per word, never per subword.
Training, evaluation, ``eval.file`` and the pyfunc model all go through :func:`encode_sentences`.

**Shards.** Tagging shards keep the three files of every split (``ids.bin`` holds each
sentence's subwords back to back, no special tokens; ``offsets.npy``; ``labels.npy``, all -1),
so pretraining reads them unchanged, and add four per split:

- ``{split}.word_offsets.npy``: ``int64[n + 1]``, sentence ``i``'s words are the flat word
  entries ``word_offsets[i]:word_offsets[i + 1]``;
- ``{split}.word_starts.npy``: ``int32[words]``, each word's first subword, relative to its
  sentence's start in ``ids``;
- ``{split}.tag_ids.npy``: ``int32[words]``, the tag id (index into ``tags.json``; a tag absent
  from train gets ``len(tags) + k``, ``k`` its index in ``meta.json``'s ``unseen_tags``);
- ``{split}.word_features.npy``: ``int32[words, F]``, each word's features
  (:func:`word_feature_ids`): hashed prefixes, suffixes and shape, used when
  ``task.word_feature_buckets`` > 0, then the word's characters (:func:`word_chars`), read by the
  character CNN when ``task.char_cnn`` > 0, then the lower-cased word's key (:func:`word_key`),
  which finds its vector when ``vectors.enabled`` (:mod:`lmforge.word_vectors`).

**Context.** A sentence longer than the context (``finetune.max_len`` subwords with ``[CLS]`` and
``[SEP]``) is cut into consecutive windows of whole words, each framed and tagged on its own, so
every word is tagged (the windows do not see each other). A single word longer than the context
keeps its first subwords. Both are counted (``split_sentences``, ``truncated_words``).
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

HASHED_FEATURES = ("prefix1", "prefix3", "suffix1", "suffix2", "suffix3", "suffix4", "shape")
# A word's characters as code points + 1 (0: none): the first CHAR_SLOTS, or of a longer word
# the first and the last CHAR_SLOTS // 2, where its stem and its ending are.
CHAR_SLOTS = 16
# Last, the hash of the whole lower-cased word (:func:`word_key`): the key of its distributional
# vector when the tagger has word vectors (``task.word_vectors``).
FEATURE_NAMES = HASHED_FEATURES + tuple(f"char{i}" for i in range(CHAR_SLOTS)) + ("word",)
# Feature ids are hashes in [1, 2**31 - 1]; 0 marks "no word here". The model folds them into
# its own table size, so the shards do not fix it.
_HASH_SPACE = 2**31 - 2
IGNORE = -100


def word_shape(word: str) -> str:
    """``Xxxx`` for ``Apple``, ``dddd`` for ``1999``, ``X.X.`` for ``U.S.``: letters by case,
    digits as ``d``, other characters as themselves, runs capped at four."""
    out: list[str] = []
    for char in word:
        mapped = "X" if char.isupper() else "x" if char.isalpha() else "d" if char.isdigit() else char
        if len(out) >= 4 and all(c == mapped for c in out[-4:]):
            continue
        out.append(mapped)
    return "".join(out)


def word_chars(word: str) -> list[int]:
    """The word's characters as :data:`CHAR_SLOTS` code points + 1, zero-padded (see
    :data:`CHAR_SLOTS` for a longer word)."""
    if len(word) > CHAR_SLOTS:
        half = CHAR_SLOTS // 2
        word = word[:half] + word[-half:]
    return [ord(char) + 1 for char in word] + [0] * (CHAR_SLOTS - len(word))


def word_key(word: str) -> int:
    """The hash of the lower-cased word in [1, 2**31 - 1]: how word vectors are looked up."""
    return zlib.crc32(f"word:{word.lower()}".encode()) % _HASH_SPACE + 1


def word_feature_ids(word: str) -> list[int]:
    """A word's features (:data:`FEATURE_NAMES`): hashed prefixes, suffixes and shape, what tells
    a tagger an unseen word's class (``-ly``, ``-ing``, a capital, digits) as in spaCy's
    MultiHashEmbed, then its characters (:func:`word_chars`) for a character CNN, then its key
    (:func:`word_key`) for word vectors."""
    lower = word.lower()
    values = (lower[:1], lower[:3], lower[-1:], lower[-2:], lower[-3:], lower[-4:], word_shape(word))
    return (
        [
            zlib.crc32(f"{name}:{value}".encode()) % _HASH_SPACE + 1
            for name, value in zip(HASHED_FEATURES, values, strict=True)
        ]
        + word_chars(word)
        + [word_key(word)]
    )


def encode_sentences(
    tokenizer, sentences: Sequence[Sequence[str]], unk_id: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each sentence's subword ids and each word's first-subword position (see the module
    docstring)."""
    encoded = []
    if not sentences:
        return encoded
    for words, encoding in zip(
        sentences,
        tokenizer.encode_batch([list(w) for w in sentences], is_pretokenized=True, add_special_tokens=False),
        strict=True,
    ):
        pieces: list[list[int]] = [[] for _ in words]
        for token, word in zip(encoding.ids, encoding.word_ids, strict=True):
            if word is not None:
                pieces[word].append(token)
        for piece in pieces:
            if not piece:
                piece.append(unk_id)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int32)
        ids = np.fromiter((t for piece in pieces for t in piece), dtype=np.int64, count=int(lengths.sum()))
        encoded.append((ids, starts))
    return encoded


def encode_tagged_to_shards(
    tokenizer,
    sentences: Iterable[tuple[list[str], list[str]]],
    out_dir: Path,
    split: str,
    tag_index: dict[str, int],
    dtype,
    unk_id: int,
    batch_size: int = 1024,
    progress=None,
) -> dict:
    """Write one split's tagging shards (module docstring); ``tag_index`` maps every tag the
    split holds to its id (unseen tags included). Returns the split's counts."""
    offsets, word_offsets = array("q", [0]), array("q", [0])
    starts, tag_ids, features = array("i"), array("i"), array("i")
    total = words_total = records = 0
    with open(out_dir / f"{split}.ids.bin", "wb") as ids_file:
        batch: list[tuple[list[str], list[str]]] = []

        def flush() -> None:
            nonlocal total, words_total, records
            for (words, tags), (ids, first) in zip(
                batch, encode_sentences(tokenizer, [w for w, _ in batch], unk_id), strict=True
            ):
                ids_file.write(ids.astype(dtype).tobytes())
                total += len(ids)
                offsets.append(total)
                starts.extend(first.tolist())
                tag_ids.extend(tag_index[t] for t in tags)
                for word in words:
                    features.extend(word_feature_ids(word))
                words_total += len(words)
                word_offsets.append(words_total)
                records += 1
            if progress is not None:
                progress.update(len(batch))
            batch.clear()

        for item in sentences:
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    np.save(out_dir / f"{split}.offsets.npy", np.frombuffer(offsets, dtype=np.int64))
    np.save(out_dir / f"{split}.labels.npy", np.full(records, -1, dtype=np.int64))
    np.save(out_dir / f"{split}.word_offsets.npy", np.frombuffer(word_offsets, dtype=np.int64))
    np.save(out_dir / f"{split}.word_starts.npy", np.frombuffer(starts, dtype=np.int32))
    np.save(out_dir / f"{split}.tag_ids.npy", np.frombuffer(tag_ids, dtype=np.int32))
    np.save(
        out_dir / f"{split}.word_features.npy",
        np.frombuffer(features, dtype=np.int32).reshape(words_total, len(FEATURE_NAMES)),
    )
    return {"records": records, "tokens": total, "labelled": 0, "words": words_total}


class TaggedSentence:
    """One sentence: subword ids, first-subword positions, tag ids (or None) and features."""

    __slots__ = ("features", "ids", "starts", "tags")

    def __init__(
        self, ids: np.ndarray, starts: np.ndarray, tags: np.ndarray | None, features: np.ndarray
    ) -> None:
        self.ids, self.starts, self.tags, self.features = ids, starts, tags, features


def shard_sentences(shard_dir: str | Path, split: str) -> list[TaggedSentence]:
    """Every sentence of a split's tagging shards, in order."""
    from lmforge.core.io import load_json, load_npy
    from lmforge.data.tokenization import check_index

    shard_dir = Path(shard_dir)
    meta = load_json(shard_dir / "meta.json", "tokenize")
    path = shard_dir / f"{split}.ids.bin"
    ids = (
        np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
        if path.stat().st_size
        else np.zeros(0, dtype=np.dtype(meta["dtype"]))
    )
    offsets, word_offsets, starts, tags, features = (
        load_npy(shard_dir / f"{split}.{name}.npy", "tokenize")
        for name in ("offsets", "word_offsets", "word_starts", "tag_ids", "word_features")
    )
    check_index(shard_dir / f"{split}.offsets.npy", offsets, len(ids), len(word_offsets) - 1)
    check_index(shard_dir / f"{split}.word_offsets.npy", word_offsets, len(tags), len(offsets) - 1)
    return [
        TaggedSentence(
            np.asarray(ids[offsets[i] : offsets[i + 1]], dtype=np.int64),
            starts[word_offsets[i] : word_offsets[i + 1]],
            tags[word_offsets[i] : word_offsets[i + 1]],
            features[word_offsets[i] : word_offsets[i + 1]],
        )
        for i in range(len(offsets) - 1)
    ]


def plain_sentences(
    tokenizer, sentences: Sequence[Sequence[str]], unk_id: int, tags: Sequence[Sequence[int]] | None = None
) -> list[TaggedSentence]:
    """Sentences given as words (``eval.file``, the pyfunc model), encoded as the shards were."""
    encoded = encode_sentences(tokenizer, sentences, unk_id)
    return [
        TaggedSentence(
            ids,
            starts,
            None if tags is None else np.asarray(tags[i], dtype=np.int32),
            np.asarray([word_feature_ids(w) for w in sentences[i]], dtype=np.int32).reshape(
                len(sentences[i]), len(FEATURE_NAMES)
            ),
        )
        for i, (ids, starts) in enumerate(encoded)
    ]


def word_windows(starts: np.ndarray, n_ids: int, budget: int) -> tuple[list[tuple[int, int]], int]:
    """Cut a sentence into consecutive runs of whole words whose subwords (each word capped at
    ``budget``) fit ``budget``; return the ``(first, end)`` word ranges and how many words were
    capped."""
    lengths = np.diff(np.append(starts, n_ids)).tolist()
    windows, first, used, capped = [], 0, 0, 0
    for i, length in enumerate(lengths):
        if length > budget:
            capped += 1
            length = budget
        if used + length > budget and i > first:
            windows.append((first, i))
            first, used = i, 0
        used += length
    windows.append((first, len(lengths)))
    return windows, capped


class TaggedWindows:
    """A torch-style dataset of context windows over tagged sentences (module docstring).

    Item: ``(input_ids, tags, word_mask, features)``; ``tags`` holds the tag id at each word's
    first subword and -100 elsewhere (-100 everywhere for untagged sentences), ``word_mask`` marks
    first subwords, ``features`` holds each word's feature ids at its first subword, 0 elsewhere.
    Windows follow sentence and word order, so the words marked in the batches of an unshuffled
    loader are the split's words in order.
    """

    def __init__(self, sentences: list[TaggedSentence], max_len: int, cls: int, sep: int) -> None:
        self.sentences = sentences
        self.cls, self.sep = cls, sep
        self.budget = max_len - 2
        self.windows: list[tuple[int, int, int]] = []
        self.split_sentences = self.truncated_words = 0
        for index, sentence in enumerate(sentences):
            windows, capped = word_windows(sentence.starts, len(sentence.ids), self.budget)
            self.windows.extend((index, a, b) for a, b in windows)
            self.split_sentences += len(windows) > 1
            self.truncated_words += capped

    @property
    def words(self) -> int:
        return sum(len(s.starts) for s in self.sentences)

    @property
    def lengths(self) -> np.ndarray:
        out = np.empty(len(self.windows), dtype=np.int64)
        for i, (index, a, b) in enumerate(self.windows):
            sentence = self.sentences[index]
            ends = np.append(sentence.starts, len(sentence.ids))
            out[i] = np.minimum(ends[a + 1 : b + 1] - ends[a:b], self.budget).sum() + 2
        return out

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int):
        import torch

        index, a, b = self.windows[item]
        sentence = self.sentences[index]
        ends = np.append(sentence.starts, len(sentence.ids))
        pieces = [sentence.ids[ends[i] : min(ends[i + 1], ends[i] + self.budget)] for i in range(a, b)]
        positions = 1 + np.concatenate(([0], np.cumsum([len(p) for p in pieces])[:-1]))
        ids = np.concatenate(([self.cls], *pieces, [self.sep])).astype(np.int64)
        tags = np.full(len(ids), IGNORE, dtype=np.int64)
        if sentence.tags is not None:
            tags[positions] = sentence.tags[a:b]
        mask = np.zeros(len(ids), dtype=bool)
        mask[positions] = True
        features = np.zeros((len(ids), sentence.features.shape[1]), dtype=np.int64)
        features[positions] = sentence.features[a:b]
        return (
            torch.from_numpy(ids),
            torch.from_numpy(tags),
            torch.from_numpy(mask),
            torch.from_numpy(features),
        )


class TagCollate:
    """Pads a batch of :class:`TaggedWindows` items (a class so worker processes can pickle it)."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, items: list) -> dict:
        import torch

        longest = max(len(ids) for ids, *_ in items)
        n = len(items)
        width = items[0][3].shape[1]
        input_ids = torch.full((n, longest), self.pad, dtype=torch.long)
        tags = torch.full((n, longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.bool)
        features = torch.zeros((n, longest, width), dtype=torch.long)
        lengths = torch.tensor([len(ids) for ids, *_ in items])
        for row, (ids, row_tags, row_mask, row_features) in enumerate(items):
            input_ids[row, : len(ids)] = ids
            tags[row, : len(ids)] = row_tags
            mask[row, : len(ids)] = row_mask
            features[row, : len(ids)] = row_features
        attention_mask = torch.arange(longest)[None, :] < lengths[:, None]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "tags": tags,
            "word_mask": mask,
            "features": features,
        }
