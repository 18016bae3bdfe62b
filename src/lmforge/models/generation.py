"""Decoding for :class:`lmforge.models.decoder.PrefixLM`: greedy, beam search and sampling.

Plain PyTorch, usable from a notebook::

    from lmforge.models.generation import generate
    out = generate(model, [[2, 17, 99, 3], [2, 45, 3]], max_new_tokens=40, prefix_lm=True,
                   num_beams=4)
    out.tokens        # new ids per prompt, end-of-sequence excluded
    out.stop_reasons  # "eos", "max_new_tokens" or "context" per prompt

Prompts are token id lists already framed by the caller: ``[CLS] source [SEP]`` for a
text-to-text model (with ``prefix_lm=True`` the whole prompt is the bidirectional prefix),
``[CLS] text`` to continue a text with a causal LM. They are left-padded into one batch (every
row then ends at the same column, so one KV cache column is written per step for all rows) with
position ids counting real tokens only, so a prompt decodes the same alone or in a batch.

Stopping, per row: at the end-of-sequence id (``eos_id``, default ``[SEP]``; None never stops
there), after ``max_new_tokens``, or at the model's context limit: prompt plus new tokens never
exceed ``cfg.max_len`` (the whole sequence can be fed back to the model, e.g. to score it).
Which one stopped a row is reported in ``stop_reasons``. A prompt longer than ``cfg.max_len``
raises ValueError: truncating it (from the left for a continuation, the source for
text-to-text) is the caller's decision.

Rows that have stopped are carried along until a quarter of the batch has, then dropped (their
cache rows too), so a long tail of unfinished rows does not pay for finished ones. Greedy and
beam search are deterministic; sampling is reproducible given ``seed`` (a
``torch.Generator``), with the same batch. ``use_cache=False`` recomputes the whole sequence at
every step (for testing the cache; same tokens, slower).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from lmforge.models.decoder import PrefixLM
from lmforge.models.transformer import KVCache

__all__ = ["EOS_ID", "DecodingConfig", "GenerationOutput", "generate"]

# [SEP], lmforge.data.tokenization.special_ids()["sep"] (models/ does not import data/; a test
# keeps the two equal). Text-to-text targets end with it (lmforge.data.prefix_lm).
EOS_ID = 3

STOP_EOS = "eos"
STOP_MAX_NEW_TOKENS = "max_new_tokens"
STOP_CONTEXT = "context"


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding options. Greedy by default; ``num_beams > 1``: beam search; ``do_sample``:
    sampling (not combined with beams)."""

    max_new_tokens: int = 64
    num_beams: int = 1
    # Beam scores are sum(log p) / length**length_penalty, length = new tokens including the
    # end-of-sequence token (Hugging Face's convention): > 0 favours longer outputs.
    length_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int | None = None  # sampling RNG; None draws from torch's global RNG
    eos_id: int | None = EOS_ID
    prefix_lm: bool = False  # the prompt is the bidirectional prefix
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {self.max_new_tokens!r}")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams must be an int >= 1, got {self.num_beams!r}")
        if self.do_sample and self.num_beams > 1:
            raise ValueError(
                "sampling with num_beams > 1 is not supported; set do_sample=false or num_beams=1"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be finite, got {self.length_penalty!r}")


@dataclass
class GenerationOutput:
    """Per prompt, in input order.

    - ``tokens``: the new token ids, end-of-sequence excluded;
    - ``stop_reasons``: ``"eos"``, ``"max_new_tokens"`` or ``"context"`` (prompt + new tokens
      reached ``cfg.max_len``);
    - ``log_probs``: the model's summed log-probability of the new tokens (the end-of-sequence
      token included when the row stopped there), temperature and filters not applied;
    - ``scores``: what the search ranked by: beam search ``log_prob / length**length_penalty``,
      otherwise ``log_prob``.
    """

    tokens: list[list[int]] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def generate(
    model: PrefixLM,
    prompts: Sequence[Sequence[int]],
    config: DecodingConfig | None = None,
    **options: object,
) -> GenerationOutput:
    """Continue each prompt (a list of token ids) with ``model``; see the module docstring.

    ``options`` are :class:`DecodingConfig` fields, overriding ``config``'s.
    """
    config = config or DecodingConfig()
    if options:
        known = {f.name for f in fields(DecodingConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"generate() got unknown options {unknown}; known: {sorted(known)}")
        config = replace(config, **options)  # type: ignore[arg-type]
    cfg = model.cfg
    prompts = [list(p) for p in prompts]
    for row, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {row} is empty; frame it first (e.g. [CLS] text)")
        if len(prompt) > cfg.max_len:
            raise ValueError(
                f"prompt {row} has {len(prompt)} tokens, over the model's context "
                f"max_len={cfg.max_len}; truncate it first"
            )
        if min(prompt) < 0 or max(prompt) >= cfg.vocab_size:
            raise ValueError(f"prompt {row} has a token id outside [0, {cfg.vocab_size})")
    if 2 * config.num_beams > cfg.vocab_size:
        raise ValueError(
            f"num_beams={config.num_beams} needs a vocabulary of at least "
            f"{2 * config.num_beams} ids, the model has {cfg.vocab_size}"
        )

    out = GenerationOutput(
        tokens=[[] for _ in prompts],
        stop_reasons=[""] * len(prompts),
        log_probs=[0.0] * len(prompts),
        scores=[0.0] * len(prompts),
    )
    # How many tokens each prompt may get: the context limit may bind before max_new_tokens.
    room = [min(config.max_new_tokens, cfg.max_len - len(p)) for p in prompts]
    todo = []
    for row, r in enumerate(room):
        if r > 0:
            todo.append(row)
        else:
            out.stop_reasons[row] = STOP_MAX_NEW_TOKENS if config.max_new_tokens == 0 else STOP_CONTEXT
    if not todo:
        return out

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            search = _beam_search if config.num_beams > 1 else _greedy_or_sample
            search(model, [prompts[i] for i in todo], [room[i] for i in todo], todo, config, out)
    finally:
        model.train(was_training)
    return out


class _Rows:
    """The batch being decoded: left-padded token history and the tensors that follow it.

    ``mask``/``pos`` are None when every prompt has the same length (no padding: the model
    derives positions from the cache length and SDPA gets no mask at all).
    """

    def __init__(
        self, model: PrefixLM, prompts: list[list[int]], repeat: int, width: int, config: DecodingConfig
    ) -> None:
        device = model.encoder.tok_emb.weight.device
        lengths = [len(p) for p in prompts]
        self.prompt_width = max(lengths)
        n = len(prompts) * repeat
        self.tokens = torch.full((n, width), model.cfg.pad_id, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            self.tokens[
                i * repeat : (i + 1) * repeat, self.prompt_width - len(prompt) : self.prompt_width
            ] = torch.as_tensor(prompt, dtype=torch.long)
        self.tokens = self.tokens.to(device)
        self.mask: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None
        if len(set(lengths)) > 1:
            col = torch.arange(width, device=device)[None, :]
            start = (
                self.prompt_width - torch.as_tensor(lengths, device=device).repeat_interleave(repeat)[:, None]
            )
            self.mask = col >= start
            self.pos = (col - start).clamp(min=0)
        self.prefix = None
        if config.prefix_lm:
            self.prefix = torch.zeros(n, width, dtype=torch.bool, device=device)
            self.prefix[:, : self.prompt_width] = (
                True if self.mask is None else self.mask[:, : self.prompt_width]
            )
        self.cache: KVCache | None = model.new_cache(n, width) if config.use_cache else None
        self.max_pos = model.cfg.max_len - 1

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or reorder, or repeat) rows ``rows`` of everything."""
        self.tokens = self.tokens.index_select(0, rows)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, rows)
            self.pos = self.pos.index_select(0, rows)
        if self.prefix is not None:
            self.prefix = self.prefix.index_select(0, rows)
        if self.cache is not None:
            self.cache.select(rows)

    def next_logits(self, model: PrefixLM, step: int) -> torch.Tensor:
        """Logits [rows, V] for the token after the ``prompt_width + step`` filled columns."""
        end = self.prompt_width + step
        mask = None if self.mask is None else self.mask[:, :end]
        pos = None if self.pos is None else self.pos[:, :end]
        if self.cache is None:  # the whole sequence again, as a reference for the cache
            prefix = None if self.prefix is None else self.prefix[:, :end]
            return model(self.tokens[:, :end], mask, prefix, pos, logits_to_keep=1)[:, -1]
        if step == 0:
            prefix = None if self.prefix is None else self.prefix[:, :end]
            return model(self.tokens[:, :end], mask, prefix, pos, self.cache, logits_to_keep=1)[:, -1]
        # New tokens are never in the prefix: a causal query over every real key needs no
        # prefix mask.
        return model(
            self.tokens[:, end - 1 : end],
            mask,
            None,
            None if pos is None else pos[:, end - 1 : end],
            self.cache,
        )[:, -1]

    def append(self, step: int, tokens: torch.Tensor) -> None:
        col = self.prompt_width + step
        self.tokens[:, col] = tokens
        if self.mask is not None:
            self.mask[:, col] = True
            # Rows that already stopped keep being fed until dropped: clamping keeps their
            # (ignored) positions valid.
            self.pos[:, col] = (self.pos[:, col - 1] + 1).clamp(max=self.max_pos)


def _stop_reason(hit_eos: bool, n_new: int, max_new_tokens: int) -> str:
    if hit_eos:
        return STOP_EOS
    return STOP_MAX_NEW_TOKENS if n_new >= max_new_tokens else STOP_CONTEXT


def _sample(logits: torch.Tensor, config: DecodingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)``, restricted to the ``top_k``
    most likely tokens and to the smallest set whose probability reaches ``top_p``."""
    logits = logits / config.temperature
    if 0 < config.top_k < logits.shape[-1]:
        kth = logits.topk(config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        # The most likely token always stays (its mass_before is 0).
        sorted_logits = sorted_logits.masked_fill(mass_before >= config.top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def _compact_due(n_done: int, n_rows: int) -> bool:
    # Dropping rows copies the cache: do it once a quarter of the rows are finished, not for
    # every row (at most ~log(B) / log(4/3) copies instead of B).
    return 4 * n_done >= n_rows


def _greedy_or_sample(
    model: PrefixLM,
    prompts: list[list[int]],
    room: list[int],
    origin: list[int],
    config: DecodingConfig,
    out: GenerationOutput,
) -> None:
    steps = max(room)
    rows = _Rows(model, prompts, 1, _rows_width(prompts, steps), config)
    device = rows.tokens.device
    generator = None
    if config.do_sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    room_t = torch.as_tensor(room, device=device)
    origin_t = torch.as_tensor(origin, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    log_prob = torch.zeros(len(prompts), device=device)
    eos = config.eos_id
    for step in range(steps):
        logits = rows.next_logits(model, step).float()
        next_tokens = _sample(logits, config, generator) if config.do_sample else logits.argmax(-1)
        token_log_prob = logits.log_softmax(-1).gather(1, next_tokens[:, None]).squeeze(1)
        log_prob += token_log_prob.masked_fill(done, 0.0)
        rows.append(step, next_tokens)
        hit_eos = next_tokens == eos if eos is not None else torch.zeros_like(done)
        newly = ~done & (hit_eos | (room_t <= step + 1))
        if not bool(newly.any()):
            continue
        for r in newly.nonzero().flatten().tolist():
            stopped_at_eos = bool(hit_eos[r])
            n_new = step + 1 - int(stopped_at_eos)
            o = int(origin_t[r])
            out.tokens[o] = rows.tokens[r, rows.prompt_width : rows.prompt_width + n_new].tolist()
            out.stop_reasons[o] = _stop_reason(stopped_at_eos, step + 1, config.max_new_tokens)
            out.log_probs[o] = out.scores[o] = float(log_prob[r])
        done |= newly
        n_done = int(done.sum())
        if n_done == done.numel():
            return
        if _compact_due(n_done, done.numel()):
            keep = (~done).nonzero().flatten()
            rows.select(keep)
            room_t, origin_t, done, log_prob = (t[keep] for t in (room_t, origin_t, done, log_prob))


def _rows_width(prompts: list[list[int]], steps: int) -> int:
    """Columns of the left-padded token buffer: the longest prompt plus the most steps."""
    return max(len(p) for p in prompts) + steps


@dataclass
class _Finalist:
    score: float
    log_prob: float
    tokens: list[int]
    reason: str


def _beam_search(
    model: PrefixLM,
    prompts: list[list[int]],
    room: list[int],
    origin: list[int],
    config: DecodingConfig,
    out: GenerationOutput,
) -> None:
    """Beam search as Hugging Face's ``generate(num_beams=k)`` with ``early_stopping=False``:
    of the 2k best extensions, those among the top k that end with end-of-sequence become
    finished hypotheses, the best k others keep running; a prompt is done when it has k
    finished hypotheses and its best running beam, scored at its current length, cannot beat
    the worst of them, or when its room is used up (running beams then finish too)."""
    k = config.num_beams
    steps = max(room)
    rows = _Rows(model, prompts, k, _rows_width(prompts, steps), config)
    device = rows.tokens.device
    n_prompts = len(prompts)
    # Prompt-level state, indexed by position among the active prompts.
    active = list(range(n_prompts))  # index into prompts/room/origin
    beam_scores = torch.zeros(n_prompts, k, device=device)
    beam_scores[:, 1:] = -math.inf  # all k beams start identical: only the first may expand
    finalists: list[list[_Finalist]] = [[] for _ in range(n_prompts)]
    done = [False] * n_prompts
    eos = config.eos_id
    penalty = config.length_penalty
    width0 = rows.prompt_width
    for step in range(steps):
        n_active = len(active)
        logits = rows.next_logits(model, step).float()
        vocab = logits.shape[-1]
        candidates = (beam_scores.reshape(-1, 1) + logits.log_softmax(-1)).view(n_active, k * vocab)
        top_scores, top_index = candidates.topk(2 * k, dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos if eos is not None else torch.zeros_like(top_token, dtype=torch.bool)
        # The first k candidates that do not end the sequence keep running (there are always
        # k: each beam can end with end-of-sequence only once).
        running = ~is_eos & ((~is_eos).cumsum(1) <= k)
        next_scores = top_scores[running].view(n_active, k)
        next_beam = top_beam[running].view(n_active, k)
        next_token = top_token[running].view(n_active, k)
        length = step + 1  # new tokens, end-of-sequence included
        norm = length**penalty

        eos_rows = is_eos[:, :k].any(1).tolist()
        next_best = (next_scores[:, 0] / norm).tolist()
        for a, i in enumerate(active):
            if done[i]:
                continue
            if eos_rows[a]:
                for c in is_eos[a, :k].nonzero().flatten().tolist():
                    score = float(top_scores[a, c])
                    src = a * k + int(top_beam[a, c])
                    _add_finalist(
                        finalists[i],
                        k,
                        _Finalist(
                            score / norm, score, rows.tokens[src, width0 : width0 + step].tolist(), STOP_EOS
                        ),
                    )
            if length >= room[i]:
                reason = _stop_reason(False, length, config.max_new_tokens)
                for c in range(k):
                    src = a * k + int(next_beam[a, c])
                    tokens = rows.tokens[src, width0 : width0 + step].tolist()
                    tokens.append(int(next_token[a, c]))
                    score = float(next_scores[a, c])
                    _add_finalist(finalists[i], k, _Finalist(score / norm, score, tokens, reason))
                done[i] = True
            elif len(finalists[i]) >= k and next_best[a] <= finalists[i][-1].score:
                done[i] = True
            if done[i]:
                best = finalists[i][0]
                o = origin[i]
                out.tokens[o], out.stop_reasons[o] = best.tokens, best.reason
                out.log_probs[o], out.scores[o] = best.log_prob, best.score

        beam_scores = next_scores
        rows.select((torch.arange(n_active, device=device)[:, None] * k + next_beam).flatten())
        rows.append(step, next_token.flatten())
        finished = [done[i] for i in active]
        if all(finished):
            return
        if _compact_due(sum(finished), n_active):
            keep_prompts = [a for a, f in enumerate(finished) if not f]
            active = [active[a] for a in keep_prompts]
            keep = torch.as_tensor(keep_prompts, device=device)
            beam_scores = beam_scores.index_select(0, keep)
            rows.select((keep[:, None] * k + torch.arange(k, device=device)).flatten())


def _add_finalist(pool: list[_Finalist], k: int, hypothesis: _Finalist) -> None:
    """Keep the ``k`` best finished hypotheses, best first."""
    pool.append(hypothesis)
    pool.sort(key=lambda h: h.score, reverse=True)
    del pool[k:]
