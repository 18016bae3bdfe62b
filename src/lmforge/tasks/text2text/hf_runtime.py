"""A finetuned ``model=hf`` text-to-text model at work, with the interface of
:class:`lmforge.tasks.text2text.runtime.TextToTextModel` (``generate``, ``target_perplexity``):
the same framing as training (:func:`lmforge.models.hf.text_to_text_hf_batch`), decoding by
``transformers``' own ``generate`` with the ``generate.*`` options. No MLflow or Lightning here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmforge.core.config import CleanConfig, GenerateConfig
from lmforge.core.errors import UserError
from lmforge.tasks.text2text.generated import Generated


class HFTextToTextModel:
    continuation = False  # a finetuned model always writes a target for a source

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        special: dict,
        *,
        max_source_len: int,
        max_target_len: int,
        clean: CleanConfig | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.special = special
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.clean = clean

    @classmethod
    def load(cls, folder: Path, config: dict, clean: CleanConfig | None = None) -> HFTextToTextModel:
        from tokenizers import Tokenizer

        from lmforge.lit.workspace import HF_FOLDER
        from lmforge.models.hf import HFTextToText

        model = HFTextToText.load(Path(folder) / HF_FOLDER, config["hf"]["trust_remote_code"])
        return cls(
            model,
            Tokenizer.from_file(str(Path(folder) / "tokenizer.json")),
            config["special_ids"],
            max_source_len=config["max_source_len"],
            max_target_len=config["max_target_len"],
            clean=clean,
        )

    def _encode(self, texts: Sequence[str], budget: int) -> tuple[list[list[int]], int]:
        from lmforge.data.cleaning import normalize_text

        if self.clean is not None:
            texts = [normalize_text(t, self.clean) for t in texts]
        ids = [e.ids for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]
        return [i[:budget] for i in ids], sum(len(i) > budget for i in ids)

    def _prompt(self, source: list[int]) -> list[int]:
        """The source framed as in training: ``source [EOS]`` for an encoder-decoder,
        ``[BOS] source [EOS]`` for a decoder."""
        sep = self.special["sep"]
        if self.model.encoder_decoder:
            return [*source, sep]
        cls = self.special["cls"] if self.special.get("cls") is not None else sep
        return [cls, *source, sep]

    def generate(
        self, texts: Sequence[str], options: GenerateConfig, progress: Callable[[int], None] | None = None
    ) -> Generated:
        import torch

        if options.rerank:
            raise UserError(
                "generate.rerank reranks with lmforge's own prefix LM finetuned with "
                "task.retrieval=true; a model=hf checkpoint has no retrieval index: set generate.rerank=0"
            )
        sources, cut = self._encode(texts, self.max_source_len)
        room = min(options.max_new_tokens, self.max_target_len + 1)
        prompts = [self._prompt(s) for s in sources]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = Generated(texts=[""] * len(prompts), tokens=[0] * len(prompts), truncated_inputs=cut)
        eos, pad = self.special["sep"], self.special["pad"]
        hf = self.model.hf
        for batch_index, start in enumerate(range(0, len(order), options.batch_size)):
            rows = order[start : start + options.batch_size]
            width = max(len(prompts[i]) for i in rows)
            # Decoders continue from the prompt's end: pad on the left.
            left = not self.model.encoder_decoder
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
            for r, i in enumerate(rows):
                ids = torch.as_tensor(prompts[i])
                span = slice(width - len(ids), width) if left else slice(0, len(ids))
                input_ids[r, span], attention_mask[r, span] = ids, 1
            torch.manual_seed(options.seed + batch_index)
            sample = options.strategy == "sample"
            with torch.inference_mode():
                generated = hf.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=room,
                    num_beams=options.num_beams if options.strategy == "beam" else 1,
                    length_penalty=options.length_penalty,
                    do_sample=sample,
                    temperature=options.temperature if sample else None,
                    top_k=options.top_k if sample else None,
                    top_p=options.top_p if sample else None,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
            # A decoder returns the prompt first; an encoder-decoder its decoder start token.
            new = generated[:, width:] if left else generated[:, 1:]
            for r, i in enumerate(rows):
                tokens = new[r].tolist()
                stopped = eos in tokens
                tokens = tokens[: tokens.index(eos)] if stopped else tokens
                out.texts[i] = self.tokenizer.decode(tokens).strip()
                out.tokens[i] = len(tokens)
                out.stopped_at_max_new_tokens += not stopped
            if progress is not None:
                progress(len(rows))
        return out

    def target_perplexity(
        self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 64
    ) -> float:
        """``exp`` of the mean negative log-likelihood per target token (its EOS included),
        teacher-forced, truncated as in training."""
        import torch

        from lmforge.models.hf import text_to_text_hf_batch

        src, _ = self._encode(sources, self.max_source_len)
        tgt, _ = self._encode(targets, self.max_target_len)
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(src), batch_size):
                batch = text_to_text_hf_batch(
                    src[start : start + batch_size],
                    tgt[start : start + batch_size],
                    self.special,
                    self.model.encoder_decoder,
                )
                ll, n = self.model.target_log_likelihood(
                    batch["input_ids"], batch["attention_mask"], None, batch["labels"]
                )
                total += float(ll.sum())
                count += int(n.sum())
        return math.exp(min(-total / max(count, 1), 50.0))
