"""Text-to-text training batches for a prefix LM (:class:`lmforge.models.decoder.PrefixLM`).

A pair (source ids, target ids) becomes one row ``[CLS] source [SEP] target [SEP]``: the first
three parts are the prefix (attended bidirectionally), the target is generated causally and the
final ``[SEP]`` is its end-of-sequence token. Rows are right-padded with ``[PAD]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["IGNORE_INDEX", "TextToTextBatch", "text_to_text_batch", "text_to_text_prompt"]

IGNORE_INDEX = -100  # no loss at this position (F.cross_entropy's default ignore_index)


@dataclass
class TextToTextBatch:
    """Tensors for :meth:`PrefixLM.target_loss`, all [B, T] (right-padded).

    - ``input_ids`` long: ``[CLS] source [SEP] target [SEP] [PAD]...``;
    - ``attention_mask`` bool: True on real tokens;
    - ``prefix_mask`` bool: True on ``[CLS] source [SEP]``;
    - ``labels`` long: at position t the token at t + 1 when that token is a target token or the
      final ``[SEP]``, else -100. Already shifted: ``logits[:, t]`` is scored against
      ``labels[:, t]`` (the source's ``[SEP]`` predicts the first target token).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prefix_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> TextToTextBatch:
        return TextToTextBatch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.prefix_mask, self.labels))
        )


def text_to_text_batch(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    max_len: int | None = None,
    special: Mapping[str, int] | None = None,
) -> TextToTextBatch:
    """Frame and pad source/target id lists (no special tokens in them) into one batch.

    ``special``: ids of ``cls``, ``sep`` and ``pad`` (default
    :func:`lmforge.data.tokenization.special_ids`). ``max_len``: if given, a row longer than it
    (``len(source) + len(target) + 3``) raises ValueError naming the row: truncating is the
    caller's decision (it knows the source and target budgets). Empty sources or targets are
    framed as they are (an empty target still teaches the model to stop: its ``[SEP]`` is scored).
    """
    if len(sources) != len(targets):
        raise ValueError(f"got {len(sources)} sources but {len(targets)} targets")
    if not sources:
        raise ValueError("text_to_text_batch needs at least one (source, target) pair")
    if special is None:
        from lmforge.data.tokenization import special_ids

        special = special_ids()
    cls_id, sep_id, pad_id = special["cls"], special["sep"], special["pad"]
    lengths = [len(s) + len(t) + 3 for s, t in zip(sources, targets, strict=True)]
    if max_len is not None:
        for row, length in enumerate(lengths):
            if length > max_len:
                raise ValueError(
                    f"row {row}: [CLS] source [SEP] target [SEP] is {length} tokens "
                    f"(source {len(sources[row])}, target {len(targets[row])}), over max_len="
                    f"{max_len}; truncate the source or the target first"
                )
    b, t = len(sources), max(lengths)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros(b, t, dtype=torch.bool)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    for row, (source, target) in enumerate(zip(sources, targets, strict=True)):
        prefix = [cls_id, *source, sep_id]
        continuation = [*target, sep_id]
        ids = prefix + continuation
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        prefix_mask[row, : len(prefix)] = True
        # Position p predicts token p + 1: the last prefix token predicts the first target one.
        first = len(prefix) - 1
        labels[row, first : first + len(continuation)] = torch.as_tensor(continuation, dtype=torch.long)
    lengths_t = torch.as_tensor(lengths)
    attention_mask = torch.arange(t)[None, :] < lengths_t[:, None]
    return TextToTextBatch(input_ids, attention_mask, prefix_mask, labels)


def text_to_text_prompt(
    source: Sequence[int],
    *,
    max_len: int | None = None,
    max_new_tokens: int = 0,
    special: Mapping[str, int] | None = None,
) -> list[int]:
    """The decoding prompt of a source, framed as in training: ``[CLS] source [SEP]``.

    With ``max_len`` (the model's context), the source is cut from the end so that the prompt
    leaves room for ``max_new_tokens`` (:func:`lmforge.models.generation.generate` stops a row
    at the context limit otherwise). Returns the ids; ``len(result) - 2`` of the source kept.
    """
    if special is None:
        from lmforge.data.tokenization import special_ids

        special = special_ids()
    source = list(source)
    if max_len is not None:
        budget = max_len - max_new_tokens - 2
        if budget < 0:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for [CLS] [SEP] in max_len={max_len}"
            )
        source = source[:budget]
    return [special["cls"], *source, special["sep"]]
