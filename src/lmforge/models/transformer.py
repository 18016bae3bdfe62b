"""A small bidirectional Transformer encoder in plain PyTorch, nanoGPT-style.

Deliberately free of Lightning, Hydra and MLflow so it can be used from a notebook::

    from lmforge.models.transformer import MaskedLM, TransformerConfig
    model = MaskedLM(TransformerConfig(vocab_size=8192))

Contents: :class:`TransformerConfig`, :class:`Encoder` (pre-LN blocks), :class:`MaskedLM` (MLM
pretraining head, computed only at masked positions), :class:`SequenceClassifier` (finetuning
head), :class:`KVCache` (keys and values kept between incremental decoding steps, used by
:class:`lmforge.models.decoder.PrefixLM`), plus :func:`training_flops_per_token` and
:func:`measure_matmul_peak_flops` for MFU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLP",
    "Block",
    "Dropout",
    "Encoder",
    "KVCache",
    "MaskedLM",
    "SelfAttention",
    "SequenceClassifier",
    "TransformerConfig",
    "classifier_from_config",
    "measure_matmul_peak_flops",
    "packed_dropout",
    "training_flops_per_token",
]

INIT_STD = 0.02


@dataclass
class TransformerConfig:
    """Sizes of the encoder. ``d_model`` must be divisible by ``n_heads``."""

    vocab_size: int
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    max_len: int = 128
    dropout: float = 0.1
    pad_id: int = 0
    norm_eps: float = 1e-5
    # Causal (GPT) attention: each position sees itself and the positions before it only.
    causal: bool = False
    # Dropout masks drawn 16 bits at a time on the CPU (:func:`packed_dropout`): the same
    # distribution as torch's (p to 1/65,536) for about an eighth of the random-number cost, but
    # a different random stream, so a run's figures change with it. Off keeps torch's masks.
    fast_dropout: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"TransformerConfig.d_model ({self.d_model}) must be divisible by n_heads "
                f"({self.n_heads}); pick d_model as a multiple of n_heads"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"TransformerConfig.pad_id ({self.pad_id}) must be a token id in "
                f"[0, vocab_size={self.vocab_size})"
            )
        if not self.norm_eps > 0:
            raise ValueError(f"TransformerConfig.norm_eps must be > 0, got {self.norm_eps!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# random_'s widest range on int64: all 64 bits uniform (the default range leaves the top bit 0).
_INT64_RANGE = (-(2**63), 2**63 - 1)


def _keep_mask(shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Inverted-dropout multiplier of ``shape``: ``1 / (1 - p)`` with probability
    ``1 - round(p * 2**16) / 2**16``, else 0.

    One 64-bit draw gives four 16-bit lanes: torch's CPU bernoulli_ makes one generator call per
    element, which was a sixth of an MLM training step (bench/pretrain_throughput.py). The
    multiplier is kept in ``dtype``, so the backward pass is one multiplication too.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(*_INT64_RANGE)
    # A lane, read as int16, is uniform over [-2**15, 2**15): keeping those >= threshold keeps
    # 2**16 - round(p * 2**16) of its 2**16 values.
    threshold = round(p * 65536) - 32768
    keep = words.view(torch.int16)[:n].view(shape) >= threshold
    # Through uint8: bool -> float conversion is several times slower on the CPU.
    return keep.view(torch.uint8).to(dtype).mul_(1.0 / (1.0 - p))


def packed_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout like ``F.dropout``, with masks from :func:`_keep_mask` on the CPU.

    Off the CPU (CUDA's dropout is already one fused kernel) and outside training it is
    ``F.dropout``.
    """
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    # The mask needs no gradient, so autograd keeps only it for the backward pass.
    return x * _keep_mask(x.shape, p, x.device, x.dtype)


class Dropout(nn.Dropout):
    """``nn.Dropout``; with ``fast=True``, :func:`packed_dropout` (same state dict either way)."""

    def __init__(self, p: float = 0.5, fast: bool = False) -> None:
        super().__init__(p)
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return packed_dropout(x, self.p, self.training)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", fast=True" if self.fast else "")


def attention_with_dropout(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    is_causal: bool,
    p: float,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` written out, with :func:`packed_dropout` on the weights.

    Training-time path of :class:`SelfAttention` when ``fast_dropout`` is on: SDPA's own
    dropout draws one random number per weight (its CPU flash kernel has no dropout at all).
    Masked scores are set to the dtype's lowest value, not -inf, so a row with every key masked
    gets finite (uniform) weights rather than NaN.
    """
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))
    if is_causal:
        t, s = scores.shape[-2:]
        causal = torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
        key_mask = causal if key_mask is None else key_mask & causal
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
    weights = packed_dropout(scores.softmax(-1), p)
    return torch.matmul(weights, v)


class KVCache:
    """Keys and values of every layer for incremental (token-by-token) decoding.

    Preallocated to ``capacity`` positions per row, one ``[B, H, capacity, head_dim]`` buffer per
    layer for keys and one for values: a decoding step writes its new keys in place instead of
    concatenating (which would copy the whole cache at every step). ``length`` is how many
    columns are filled; every row has the same number of columns (left-pad rows of different
    lengths). :meth:`select` keeps/reorders rows (beam search, dropping finished rows).
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        batch_size: int,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1 or capacity < 1:
            raise ValueError(
                f"KVCache needs batch_size >= 1 and capacity >= 1, got {batch_size} and {capacity}"
            )
        shape = (batch_size, cfg.n_heads, capacity, cfg.head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.capacity = capacity
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` [B, H, t, hd] after the filled columns of ``layer`` and return that
        layer's keys and values so far (views, [B, H, length + t, hd]). :meth:`advance` moves
        ``length`` once every layer has been written."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(
                f"KVCache is full: {end} columns needed, capacity {self.capacity}; allocate a larger cache"
            )
        keys, values = self.keys[layer], self.values[layer]
        # narrow() rather than slicing syntax: this runs twice per layer per generated token,
        # and Python-level indexing costs more than the copy itself at batch 1.
        keys.narrow(2, start, end - start).copy_(k)
        values.narrow(2, start, end - start).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, t: int) -> None:
        self.length += t

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (long [B'], may repeat or reorder) of every layer, in place."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


class SelfAttention(nn.Module):
    """Multi-head self-attention: bidirectional, or causal when ``cfg.causal``.

    One fused ``qkv`` Linear (one GEMM instead of three). Its output features are laid out as
    ``[q | k | v]``, each ``d_model`` wide and split into ``n_heads`` contiguous head slices.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.causal = cfg.causal
        self.fast_dropout = cfg.fast_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = Dropout(cfg.dropout, fast=cfg.fast_dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """``x``: [B, T, D]; ``key_mask``: bool, broadcastable to [B, 1, T, T_keys] (True =
        attend), or None; ``cache``: keys/values of earlier positions (``layer`` indexes it),
        which this call extends by T, so ``T_keys = cache.length + T``."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        # A padded causal batch arrives with the causal triangle already in key_mask (Encoder);
        # an unpadded one lets SDPA apply it, with a kernel that skips the masked half. SDPA's
        # is_causal aligns the triangle top-left, which is only right while no earlier keys are
        # cached; a cached step without a mask is a single query, which may see every key.
        is_causal = self.causal and key_mask is None and (cache is None or cache.length == 0)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        dropout_p = self.dropout if self.training else 0.0
        if self.fast_dropout and dropout_p > 0.0 and x.device.type == "cpu":
            y = attention_with_dropout(q, k, v, key_mask, is_causal, dropout_p)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask, is_causal=is_causal, dropout_p=dropout_p
            )
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = Dropout(cfg.dropout, fast=cfg.fast_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN residual block: normalising before each sublayer keeps deep stacks trainable
    without learning-rate warmup tricks that post-LN (original BERT) needs."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_mask, cache, layer)
        return x + self.mlp(self.ln2(x))


def _init_weights(module: nn.Module, n_layers: int) -> None:
    """GPT-2 initialisation: N(0, 0.02) everywhere, zero biases, unit LayerNorm, and the
    projections that write into the residual stream scaled by 1/sqrt(2 * n_layers) so the
    residual's variance does not grow with depth (two residual writes per block)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            std = INIT_STD
            if name.endswith(("attn.proj", "mlp.proj")):
                std = INIT_STD / math.sqrt(2 * n_layers)
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """Token + learned position embeddings, ``n_layers`` pre-LN blocks, final LayerNorm."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.dropout = Dropout(cfg.dropout, fast=cfg.fast_dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        _init_weights(self, cfg.n_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        key_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids``: long [B, T]; ``attention_mask``: bool [B, T], True = real token.
        ``extra_embeddings`` [B, T, D], if given, is added to the token and position embeddings
        (the tagger's word features, :class:`lmforge.models.tagger.TokenTagger`).

        Returns hidden states [B, T, D]. Pass ``attention_mask=None`` for unpadded (packed)
        batches: SDPA then gets no mask and can use its fastest kernel. Hidden states at padded
        positions, and for rows with no real token at all, are finite but meaningless.

        For decoding (:class:`lmforge.models.decoder.PrefixLM`): ``key_mask`` is a complete
        visibility mask, bool broadcastable to [B, 1, T, T_keys] (True = query may attend to
        key), used instead of one built from ``attention_mask``; ``position_ids`` long [B, T]
        replaces ``cache.length + arange(T)`` (the caller keeps them below ``max_len``);
        ``cache`` holds earlier positions' keys and values (``T_keys = cache.length + T``) and
        is extended by this call.
        """
        t = input_ids.shape[1]
        past = 0 if cache is None else cache.length
        if position_ids is None:
            if past + t > self.cfg.max_len:
                raise ValueError(
                    f"sequence length {past + t} exceeds TransformerConfig.max_len="
                    f"{self.cfg.max_len}; truncate the input or raise max_len"
                )
            pos = torch.arange(past, past + t, device=input_ids.device)
        else:  # not checked here: that would cost a device sync per decoding step
            pos = position_ids
        if key_mask is None and attention_mask is not None:
            if past:
                raise ValueError(
                    "Encoder: with a non-empty cache pass key_mask (the mask of "
                    "the new queries over every cached key), not attention_mask"
                )
            # [B, 1, 1, T] broadcasts over heads and query positions: a padded key is hidden
            # from every query, which is all that is needed for padded positions not to leak.
            key_mask = attention_mask.to(torch.bool)[:, None, None, :]
            if self.cfg.causal:  # built once here rather than in every block
                key_mask = key_mask & torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
        x = self.tok_emb(input_ids) + self.pos_emb(pos)
        if extra_embeddings is not None:
            x = x + extra_embeddings
        x = self.dropout(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, key_mask, cache, layer)
        if cache is not None:
            cache.advance(t)
        return self.ln_f(x)


class MaskedLM(nn.Module):
    """Encoder + BERT-style MLM head whose decoder is tied to the token embedding.

    ``positions`` is a **flat** index into the ``B * T`` token grid (row-major, i.e.
    ``b * T + t``), as returned by :func:`lmforge.data.masking.mask_tokens`. The head (dense,
    GELU, LayerNorm, vocab projection) runs only on those N hidden states: with 15% masking
    this skips ~85% of the largest matmul and of the softmax over the vocabulary.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.head_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.head_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size)
        # Tying halves the embedding parameter count and gives rare tokens' input embeddings
        # a training signal from the output side too.
        self.decoder.weight = self.encoder.tok_emb.weight
        nn.init.normal_(self.head_dense.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.head_dense.bias)
        nn.init.zeros_(self.decoder.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        targets: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids``: long [B, T] (already masked); ``positions``: long [N] flat indices
        into B*T; ``targets``: long [N] original token ids at those positions;
        ``attention_mask``: optional bool [B, T] for padded batches (None for packed ones).

        Returns ``(loss, logits)``: mean cross-entropy over the N positions and logits [N, V].
        """
        if positions.dim() != 1 or positions.shape != targets.shape:
            raise ValueError(
                f"positions and targets must both be 1-D of equal length, got "
                f"{tuple(positions.shape)} and {tuple(targets.shape)}"
            )
        hidden = self.encoder(input_ids, attention_mask)
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        logits = self.decoder(self.head_norm(F.gelu(self.head_dense(hidden))))
        loss = F.cross_entropy(logits, targets)
        return loss, logits

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (the tied decoder weight is counted once)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.encoder.tok_emb.weight.numel() + self.encoder.pos_emb.weight.numel()
        return n


class SequenceClassifier(nn.Module):
    """Encoder + pooling + dropout + Linear, for finetuning on sequence-level labels.

    ``pooling="mean"`` averages hidden states over real tokens only; ``"cls"`` takes the
    first token's hidden state (put a [CLS] token there when preparing the data).
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        num_labels: int,
        pooling: Literal["mean", "cls"] = "mean",
        word_vectors: tuple[int, int] | None = None,
        ngram_buckets: int = 0,
        encoder_len: int | None = None,
        sep_id: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.cfg = cfg
        self.pooling = pooling
        self.encoder = Encoder(cfg)
        self.dropout = Dropout(cfg.dropout, fast=cfg.fast_dropout)
        self.classifier = nn.Linear(cfg.d_model, num_labels)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.classifier.bias)
        # Optional frozen word vectors ([words, dim], :mod:`lmforge.word_vectors`): each word's
        # vector, projected, is added to its first token's embedding, as the tagger does.
        self.word_vectors = tuple(word_vectors) if word_vectors else None
        if word_vectors:
            from lmforge.models.word_vectors import TokenWordKeys, WordVectors

            self.word_keys = TokenWordKeys(cfg.vocab_size, cfg.max_len)
            self.vectors = WordVectors(*word_vectors)
            self.vector_proj = nn.Linear(word_vectors[1], cfg.d_model, bias=False)
            nn.init.normal_(self.vector_proj.weight, mean=0.0, std=INIT_STD)
        # Optional n-gram model to fuse with (finetune.ngram_fusion, :mod:`lmforge.models.ngrams`):
        # fitted before finetuning, mixed in with `ngram_weight`, chosen on validation after it.
        self.ngram_buckets = ngram_buckets
        # Inputs longer than encoder_len (the n-gram model reads more of a text than the
        # encoder, finetune.ngram_max_len) reach the encoder as `[CLS] ids [SEP]` cut to
        # encoder_len, as the data framed them before: the cut row's last token becomes [SEP].
        self.encoder_len = encoder_len
        self.sep_id = sep_id
        if encoder_len is not None and sep_id is None:
            raise ValueError("encoder_len needs sep_id, the [SEP] that ends a cut text")
        if ngram_buckets:
            from lmforge.models.ngrams import NgramLogits

            self.ngrams = NgramLogits(ngram_buckets, num_labels, cfg.vocab_size, cfg.max_len)
            self.register_buffer("ngram_weight", torch.zeros(()))

    def set_word_vectors(
        self, keys: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, kinds: torch.Tensor
    ) -> None:
        """The vectors, their words' keys and rows (:func:`lmforge.models.word_vectors.token_word_keys`)
        and the tokenizer's word starts (:func:`lmforge.models.word_vectors.token_kinds`)."""
        self.vectors.set(keys, table, rows)
        self.word_keys.set(kinds)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids``: long [B, T]; ``attention_mask``: bool [B, T], True = real token.

        If ``attention_mask`` is None it is derived as ``input_ids != cfg.pad_id``.
        Returns logits [B, num_labels]; fused with an n-gram model (``ngram_weight`` w > 0), the
        log of ``(1 - w) * softmax(own logits) + w * softmax(n-gram logits)``.
        """
        if attention_mask is None:
            attention_mask = input_ids != self.cfg.pad_id
        attention_mask = attention_mask.to(torch.bool)
        ids, mask = input_ids, attention_mask
        if self.encoder_len is not None and input_ids.shape[1] > self.encoder_len:
            ids, mask = input_ids[:, : self.encoder_len].clone(), attention_mask[:, : self.encoder_len]
            ids[attention_mask[:, self.encoder_len :].any(dim=1), -1] = self.sep_id
        extra = None
        if self.word_vectors:
            extra = self.vector_proj(self.vectors(self.word_keys(ids)))
        hidden = self.encoder(ids, mask, extra_embeddings=extra)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        if self.ngram_buckets and self.ngram_weight > 0:
            weight = self.ngram_weight
            own = logits.log_softmax(-1) + torch.log1p(-weight)
            other = self.ngrams(input_ids).log_softmax(-1) + weight.log()
            return torch.logaddexp(own, other)
        return logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ClassifierEnsemble(nn.Module):
    """``K`` :class:`SequenceClassifier` members trained side by side (``finetune.ensemble``):
    each starts from its own initialisation (and the pretrained encoder, when there is one) and
    draws its own dropout, and all read the same batches. It is called as one classifier: the
    logits it returns are the log of the members' mean class probabilities, so a softmax gives
    that mean and the argmax is the ensemble's vote (Lakshminarayanan et al., 2017, "Simple and
    Scalable Predictive Uncertainty Estimation using Deep Ensembles")."""

    def __init__(self, members: list[SequenceClassifier]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg

    def member_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[K, B, num_labels]: each member's own logits (training scores each member alone)."""
        return torch.stack([member(input_ids, attention_mask) for member in self.members])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        log_probs = self.member_logits(input_ids, attention_mask).log_softmax(-1)
        return log_probs.logsumexp(0) - math.log(len(self.members))

    def set_word_vectors(
        self, keys: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, kinds: torch.Tensor
    ) -> None:
        for member in self.members:
            member.set_word_vectors(keys, table, rows, kinds)


def build_classifier(
    cfg: TransformerConfig,
    num_labels: int,
    pooling: Literal["mean", "cls"] = "mean",
    word_vectors: tuple[int, int] | None = None,
    ensemble: int = 1,
    ngram_buckets: int = 0,
    encoder_len: int | None = None,
    sep_id: int | None = None,
) -> SequenceClassifier | ClassifierEnsemble:
    """One :class:`SequenceClassifier`, or with ``ensemble`` > 1 a :class:`ClassifierEnsemble` of
    that many, each initialised on its own."""
    members = [
        SequenceClassifier(cfg, num_labels, pooling, word_vectors, ngram_buckets, encoder_len, sep_id)
        for _ in range(max(ensemble, 1))
    ]
    return members[0] if len(members) == 1 else ClassifierEnsemble(members)


def classifier_from_config(config: dict) -> SequenceClassifier | ClassifierEnsemble:
    """An untrained classifier shaped as a finetuned folder's ``config.json`` says."""
    vectors = config.get("word_vectors")
    return build_classifier(
        TransformerConfig(**config["model"]),
        num_labels=len(config["labels"]),
        pooling=config["pooling"],
        word_vectors=tuple(vectors) if vectors else None,
        ensemble=config.get("ensemble", 1),
        ngram_buckets=config.get("ngram_buckets", 0),
        **encoder_cut(config),
    )


def input_len(config: dict) -> int:
    """How many tokens of a text a finetuned classifier reads (its folder's ``config.json``):
    ``max_len``, or longer where its n-gram model reads more (``ngram_max_len``)."""
    if not config.get("ngram_buckets"):
        return config["max_len"]
    return max(config["max_len"], config.get("ngram_max_len", 0))


def encoder_cut(config: dict) -> dict:
    """``encoder_len`` and ``sep_id`` for a classifier whose inputs may outrun its encoder."""
    if "max_len" not in config or input_len(config) <= config["max_len"]:
        return {}
    return {"encoder_len": config["max_len"], "sep_id": config["special_ids"]["sep"]}


def training_flops_per_token(cfg: TransformerConfig, seq_len: int, masked_fraction: float) -> float:
    """Model FLOPs of one training step (forward + backward) per input token, for MFU.

    Formula from Kaplan et al. 2020 ("Scaling Laws", 6N per token: 2N forward, 4N backward)
    with the attention-score term of Chowdhery et al. 2022 (PaLM, appendix B) as used by
    nanoGPT's ``estimate_mfu``: ``6 * N + 12 * L * T * D``, where N counts matmul weights only
    (embedding lookups and LayerNorm/bias are negligible) and ``12 * L * T * D`` is QK^T and
    attention-times-V (2 * 2 * T * D per layer forward, x3 for backward). The attention is
    bidirectional, so nothing is halved for causality. The MLM head (dense D x D + tied
    decoder D x V) is counted only at ``masked_fraction`` of the tokens: the work spent on it
    at unmasked positions (as a full-sequence head would do) is not useful work.
    """
    if not 0.0 <= masked_fraction <= 1.0:
        raise ValueError(f"masked_fraction must be in [0, 1], got {masked_fraction}")
    d, f, n_layers = cfg.d_model, cfg.d_ff, cfg.n_layers
    body_params = n_layers * (4 * d * d + 2 * d * f)  # qkv 3D^2 + out-proj D^2 + MLP 2DF
    head_params = d * d + d * cfg.vocab_size
    return 6.0 * body_params + 12.0 * n_layers * seq_len * d + masked_fraction * 6.0 * head_params


def measure_matmul_peak_flops(
    dtype: torch.dtype = torch.float32,
    n: int = 1024,
    device: str | torch.device = "cpu",
    seconds: float = 1.0,
) -> float:
    """Achievable matmul throughput (FLOP/s) of ``device``: the MFU denominator.

    Repeats an ``n x n`` ``torch.mm`` for about ``seconds`` after a warm-up and returns the best
    rate over short chunks, because on a shared machine the best chunk is the closest estimate
    of what the hardware can do (other processes only ever slow a chunk down).
    """
    device = torch.device(device)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    out = torch.empty(n, n, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up: thread pool start, allocator, BLAS kernel selection
        torch.mm(a, b, out=out)
    sync()
    # Size a chunk to ~1/10 of the budget from one timed call so small n does not time noise.
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync()
    reps = max(1, int(0.1 * seconds / max(time.perf_counter() - start, 1e-9)))
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        sync()
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * n**3 * reps / elapsed)
        if time.perf_counter() >= deadline:
            return best
