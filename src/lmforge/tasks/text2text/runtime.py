"""A finetuned text-to-text model at work: load it, write texts from texts, score references.

Shared by the evaluate stage, ``python -m lmforge.generate`` and the registered pyfunc model, so
all three encode, truncate and decode alike. No MLflow or Lightning here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmforge.core.config import CleanConfig, GenerateConfig
from lmforge.core.errors import UserError
from lmforge.core.io import load_json, load_weights
from lmforge.tasks.text2text.generated import Generated


def decoding_config(options: GenerateConfig, *, prefix_lm: bool, max_new_tokens: int | None = None) -> Any:
    """``generate.*`` as the decoder's :class:`~lmforge.models.generation.DecodingConfig`."""
    from lmforge.data.tokenization import special_ids
    from lmforge.models.generation import DecodingConfig

    return DecodingConfig(
        max_new_tokens=max_new_tokens or options.max_new_tokens,
        num_beams=options.num_beams if options.strategy == "beam" else 1,
        length_penalty=options.length_penalty,
        do_sample=options.strategy == "sample",
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        seed=options.seed,
        eos_id=special_ids()["sep"],
        prefix_lm=prefix_lm,
    )


class TextToTextModel:
    """A prefix LM with its tokenizer and budgets. ``continuation=True`` makes it a plain
    causal LM that continues ``[CLS] prompt`` (a pretrained LM); otherwise it writes a target
    for ``[CLS] source [SEP]``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_source_len: int,
        max_target_len: int,
        prefix_lm: bool,
        continuation: bool = False,
        clean: CleanConfig | None = None,
        retrieval: Any = None,
    ) -> None:
        from lmforge.data.tokenization import special_ids

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.prefix_lm = prefix_lm and not continuation
        self.continuation = continuation
        self.clean = clean
        # task.retrieval: a lmforge.data.retrieval.NearestPairs over the training pairs; each source
        # is read with its nearest pair's target in front, as in training.
        self.retrieval = retrieval
        self.special = special_ids()

    @classmethod
    def load(cls, folder: Path, clean: CleanConfig | None = None) -> Any:
        """A finetuned text-to-text folder (``model.pt``, ``config.json``, ``tokenizer.json``),
        or a causal-LM pretrained folder (``lm.pt``) for continuation; a ``model=hf`` folder
        gives a :class:`~lmforge.tasks.text2text.hf_runtime.HFTextToTextModel`."""
        from tokenizers import Tokenizer

        from lmforge.models.decoder import PrefixLM
        from lmforge.models.transformer import TransformerConfig

        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise UserError(
                f"{config_path} is missing; point at a finetuned text-to-text model "
                "or a pretrained causal LM folder"
            )
        stage = "pretrain" if folder.name == "pretrained" else "finetune"
        config = load_json(config_path, stage)
        if "hf" in config and config.get("task") == "text2text":  # model=hf: transformers decodes
            from lmforge.tasks.text2text.hf_runtime import HFTextToTextModel

            return HFTextToTextModel.load(folder, config, clean=clean)
        if "task" in config:
            if config["task"] != "text2text":
                raise UserError(
                    f"{folder} holds a {config['task']} model, which does not generate "
                    "text; finetune with task=text2text, or point generate.model at "
                    "a pretrained causal LM (models/pretrained with pretrain=clm)"
                )
            weights, model_cfg = folder / "model.pt", config["model"]
            options = {
                "max_source_len": config["max_source_len"],
                "max_target_len": config["max_target_len"],
                "prefix_lm": config["prefix_lm"],
            }
            if config.get("retrieval"):
                options["retrieval"] = load_retrieval(folder)
            tokenizer_path = folder / "tokenizer.json"
        else:  # models/pretrained: config.json is the TransformerConfig, lm.pt the whole LM
            weights, model_cfg = folder / "lm.pt", config
            options = {
                "max_source_len": config["max_len"] - 1,
                "max_target_len": config["max_len"],
                "prefix_lm": False,
                "continuation": True,
            }
            tokenizer_path = folder / "tokenizer.json"
        for path in (weights, tokenizer_path):
            if not path.is_file():
                raise UserError(
                    f"{path} is missing; run the finetune stage (task=text2text) or "
                    "pretrain with pretrain=clm first"
                )
        model = load_weights(PrefixLM(TransformerConfig(**model_cfg)), weights, stage)
        return cls(model, Tokenizer.from_file(str(tokenizer_path)), clean=clean, **options)

    def encode_inputs(self, texts: Sequence[str], room: int) -> tuple[list[list[int]], int]:
        """Framed prompts and how many inputs were cut. A source keeps its first
        ``max_source_len`` tokens (as in training); a continuation prompt keeps its last
        ``max_len - room`` tokens, so ``room`` new tokens fit in the context."""
        from lmforge.data.prefix_lm import text_to_text_prompt

        encodings = self.tokenizer.encode_batch_fast(self.source_texts(texts), add_special_tokens=False)
        cls_id = self.special["cls"]
        prompts, cut = [], 0
        for encoding in encodings:
            ids = encoding.ids
            if self.continuation:
                keep = max(1, self.model.cfg.max_len - 1 - room)
                cut += len(ids) > keep
                prompts.append([cls_id, *ids[-keep:]] if ids else [cls_id])
            else:
                cut += len(ids) > self.max_source_len
                prompts.append(text_to_text_prompt(ids[: self.max_source_len], special=self.special))
        return prompts, cut

    def source_texts(self, texts: Sequence[str]) -> list[str]:
        """Inputs as the model reads them: normalised as in training (``data.clean``, when
        given) and, for a retrieval-augmented model, with their nearest training target in front."""
        texts = self.normalized(texts)
        if self.retrieval is not None and not self.continuation:
            texts = self.retrieval.augment(texts)
        return texts

    def normalized(self, texts: Sequence[str]) -> list[str]:
        """Inputs normalised as in training (``data.clean``, when given)."""
        from lmforge.data.cleaning import normalize_text

        return [normalize_text(t, self.clean) for t in texts] if self.clean is not None else list(texts)

    def generate(
        self, texts: Sequence[str], options: GenerateConfig, progress: Callable[[int], None] | None = None
    ) -> Generated:
        """Write one output per input text, batched by length, in input order."""
        from lmforge.models.generation import STOP_CONTEXT, STOP_MAX_NEW_TOKENS, generate

        room = (
            options.max_new_tokens
            if self.continuation
            else min(options.max_new_tokens, self.max_target_len + 1)
        )
        decoding = decoding_config(options, prefix_lm=self.prefix_lm, max_new_tokens=room)
        prompts, cut = self.encode_inputs(texts, room)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = Generated(texts=[""] * len(prompts), tokens=[0] * len(prompts), truncated_inputs=cut)
        from dataclasses import replace

        for batch_index, start in enumerate(range(0, len(order), options.batch_size)):
            rows = order[start : start + options.batch_size]
            # A seed per batch: sampling reproduces whatever the batch size and order.
            config = replace(decoding, seed=options.seed + batch_index)
            result = generate(self.model, [prompts[i] for i in rows], config)
            for row, tokens, reason in zip(rows, result.tokens, result.stop_reasons, strict=True):
                out.texts[row] = self.tokenizer.decode(tokens).strip()
                out.tokens[row] = len(tokens)
                out.stopped_at_context += reason == STOP_CONTEXT
                out.stopped_at_max_new_tokens += reason == STOP_MAX_NEW_TOKENS
            if progress is not None:
                progress(len(rows))
        if options.rerank:
            self.rerank(texts, out, options)
        return out

    def rerank(self, texts: Sequence[str], out: Generated, options: GenerateConfig) -> None:
        """Retrieve and rerank (``generate.rerank``; Cao et al., ACL 2018, "Retrieve, Rerank and
        Rewrite"): each decoded text competes with the targets of the input's ``rerank`` nearest
        training pairs. A candidate scores its mean log-likelihood per target token under the
        model (its ``[SEP]`` included), plus ``rerank_similarity`` times the TF-IDF cosine of its
        pair's source to the input (0 for the decoded text); the best replaces the output."""
        import numpy as np

        if self.retrieval is None or self.continuation:
            raise UserError(
                "generate.rerank needs a text-to-text model finetuned with task.retrieval=true "
                "(its retrieval.json holds the training pairs to rerank); set generate.rerank=0"
            )
        queries = self.normalized(texts)
        indices, similarities = self.retrieval.top(queries, options.rerank)
        # The nearest pair frames the source, as in training: one search serves both.
        framed = self.encode_sources(self.retrieval.augment(queries, neighbours=indices[:, 0]))
        candidates = [
            [decoded, *(self.retrieval.targets[j] for j in row)]
            for decoded, row in zip(out.texts, indices, strict=True)
        ]
        source_ids = [ids for ids, row in zip(framed, candidates, strict=True) for _ in row]
        ll, n = self.log_likelihoods(source_ids, [c for row in candidates for c in row], options.batch_size)
        width = 1 + indices.shape[1]
        lengths = n.reshape(-1, width)
        score = ll.reshape(-1, width) / np.maximum(lengths, 1)
        score[:, 1:] += options.rerank_similarity * similarities
        best = score.argmax(axis=1)  # the first of equals: the decoded text before a neighbour
        out.decoded, out.retrieved = list(out.texts), [bool(b) for b in best]
        for row, pick in enumerate(best):
            if pick:
                out.texts[row] = candidates[row][pick]
                out.tokens[row] = int(lengths[row, pick]) - 1  # its [SEP] excluded

    def target_perplexity(
        self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 64
    ) -> float:
        """``exp`` of the mean negative log-likelihood per target token (its ``[SEP]`` included),
        teacher-forced, sources and targets truncated as in training."""
        import math

        ll, n = self.log_likelihoods(self.source_ids(sources), targets, batch_size)
        total, count = float(ll.sum()), int(n.sum())
        return math.exp(min(-total / max(count, 1), 50.0))

    def source_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Sources as token ids, framed (:meth:`source_texts`) and truncated as in training."""
        return self.encode_sources(self.source_texts(texts))

    def encode_sources(self, framed: Sequence[str]) -> list[list[int]]:
        """Framed sources (:meth:`source_texts`) as token ids, truncated as in training."""
        encodings = self.tokenizer.encode_batch_fast(list(framed), add_special_tokens=False)
        return [e.ids[: self.max_source_len] for e in encodings]

    def log_likelihoods(
        self, src: Sequence[list[int]], targets: Sequence[str], batch_size: int = 64
    ) -> tuple[Any, Any]:
        """Each target's log-likelihood given its source (token ids, :meth:`source_ids`) and
        its token count (``[SEP]`` included), teacher-forced, the target truncated as in
        training: a float64 and an int64 array in input order."""
        import numpy as np
        import torch

        from lmforge.data.prefix_lm import text_to_text_batch

        encodings = self.tokenizer.encode_batch_fast(list(targets), add_special_tokens=False)
        tgt = [e.ids[: self.max_target_len] for e in encodings]
        ll, n = np.zeros(len(src)), np.zeros(len(src), dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, len(src), batch_size):
                batch = text_to_text_batch(
                    src[start : start + batch_size], tgt[start : start + batch_size], special=self.special
                )
                batch_ll, batch_n = self.model.target_log_likelihood(
                    batch.input_ids,
                    batch.attention_mask,
                    batch.prefix_mask if self.prefix_lm else None,
                    batch.labels,
                )
                ll[start : start + len(batch_ll)] = batch_ll.double().numpy()
                n[start : start + len(batch_n)] = batch_n.numpy()
        return ll, n


RETRIEVAL_FILE = "retrieval.json"


def load_retrieval(folder: Path) -> Any:
    """The training pairs a retrieval-augmented model searches (``retrieval.json``, written by
    the finetune stage), indexed."""
    from lmforge.data.retrieval import NearestPairs

    path = Path(folder) / RETRIEVAL_FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing: the model was finetuned with task.retrieval=true and reads each "
            "source with its nearest training pair; rerun the finetune stage to write it"
        )
    pairs = load_json(path, "finetune")
    return NearestPairs(pairs["sources"], pairs["targets"])
