"""MLM pretraining throughput: lmforge MaskedLM vs Hugging Face BertForMaskedLM, same sizes.

Times full training steps (forward, backward, AdamW step) on identical pre-masked batches and
reports tokens/s and MFU (model FLOPs/s from ``training_flops_per_token`` over the measured fp32
matmul peak). lmforge runs twice: with torch's dropout (the default) and with
``fast_dropout=True`` (packed masks, ``model.fast_dropout`` in the pipeline; ``--no-fast-dropout``
skips it). The models are timed in alternating rounds (``--rounds``, default 5) so that
load from other processes on a shared machine hits both alike; each figure is the median over
the rounds, and the ratio the median of the per-round ratios.

    python bench/pretrain_throughput.py                  # defaults: the lmforge base config
    python bench/pretrain_throughput.py --compile --json reports/throughput.json  # + compiled

The peer is random-initialised from a ``BertConfig`` (nothing is downloaded) and trained the
way its documentation shows (``labels`` with -100 at unmasked positions) with a default
``torch.optim.AdamW``; ``--peer-optim same`` gives it lmforge's optimizer settings instead, to
separate the optimizer's share of the speed-up from the model's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# Benchmark the code of this checkout, not whichever lmforge happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmforge.data.masking import mask_tokens
from lmforge.lit.optim import adamw
from lmforge.models.transformer import (
    MaskedLM,
    TransformerConfig,
    measure_matmul_peak_flops,
    training_flops_per_token,
)

# Token ids reserved as specials in the synthetic batches, mirroring a real tokenizer.
PAD, CLS, SEP, MASK = 0, 1, 2, 3
PEER_NAME = "HF BertForMaskedLM"


@dataclass
class Result:
    name: str
    tokens_per_s: float
    step_ms: float
    mfu: float
    params: int
    steps: int
    round_tokens_per_s: list[float]  # per alternating round; tokens_per_s is their median


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--width", type=int, default=256, help="d_model / hidden_size")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024, help="d_ff / intermediate_size")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--mask-rate", type=float, default=0.15)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    p.add_argument("--steps", type=int, default=4, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd lmforge model")
    p.add_argument(
        "--no-fast-dropout",
        action="store_true",
        help="do not also time lmforge with model.fast_dropout=true (packed dropout masks)",
    )
    p.add_argument(
        "--peer-optim",
        choices=["default", "same"],
        default="default",
        help="peer optimizer: plain torch.optim.AdamW, or the same settings as lmforge",
    )
    p.add_argument("--no-peer", action="store_true", help="time lmforge only")
    p.add_argument("--peak-seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write results to this file")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--bf16", action="store_true", help="bf16 autocast; MFU is then against the bf16 matmul peak"
    )
    return p.parse_args(argv)


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """lmforge's own AdamW construction (fused kernel where available)."""
    return adamw([{"params": params}], lr=lr)


def build_peer(cfg: TransformerConfig) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    bert_cfg = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_ff,
        max_position_embeddings=cfg.max_len,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        hidden_act="gelu",
        layer_norm_eps=cfg.norm_eps,
        pad_token_id=cfg.pad_id,
    )
    # Older transformers reject the setting: they then keep their default attention.
    with contextlib.suppress(AttributeError, ValueError):
        bert_cfg._attn_implementation = "sdpa"
    return BertForMaskedLM(bert_cfg)


def timed_steps(step: Callable[[int], None], first: int, n: int) -> float:
    synchronize()
    start = time.perf_counter()
    for i in range(first, first + n):
        step(i)
    synchronize()
    return time.perf_counter() - start


def synchronize() -> None:
    # CUDA runs asynchronously: without this the clock would stop before the work does.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = TransformerConfig(
        vocab_size=args.vocab,
        d_model=args.width,
        n_layers=args.layers,
        n_heads=args.heads,
        d_ff=args.ffn,
        max_len=args.seq,
        dropout=args.dropout,
        pad_id=PAD,
    )

    # A few pre-masked batches, shared by both models so they do identical work.
    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(
            device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16
        )

    g = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(4):
        ids = torch.randint(MASK + 1, args.vocab, (args.batch, args.seq), generator=g)
        inp, positions, targets = mask_tokens(
            ids,
            mask_rate=args.mask_rate,
            mask_id=MASK,
            vocab_size=args.vocab,
            special_ids=(PAD, CLS, SEP),
            generator=g,
        )
        labels = torch.full_like(ids, -100)
        labels.view(-1)[positions] = targets
        batches.append(tuple(t.to(args.device) for t in (inp, positions, targets, labels)))
    tokens_per_step = args.batch * args.seq
    masked_fraction = sum(b[1].numel() for b in batches) / (len(batches) * tokens_per_step)
    flops_per_token = training_flops_per_token(cfg, args.seq, masked_fraction)

    def lmforge_step(compiled: bool, fast: bool) -> tuple[Callable[[int], None], int]:
        torch.manual_seed(args.seed)  # every variant starts from the same weights
        model = MaskedLM(dataclasses.replace(cfg, fast_dropout=fast)).to(args.device).train()
        optim = make_optimizer(list(model.parameters()), args.lr)
        forward = torch.compile(model) if compiled else model

        def step(i: int) -> None:
            inp, positions, targets, _ = batches[i % len(batches)]
            with autocast():
                loss, _ = forward(inp, positions, targets)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

        return step, model.num_parameters()

    steps: dict[str, Callable[[int], None]] = {}
    params: dict[str, int] = {}
    variants = [("lmforge MaskedLM", False, False)]
    if not args.no_fast_dropout and args.dropout > 0:
        variants.append(("lmforge fast dropout", False, True))
    if args.compile:
        variants.append(("lmforge compiled", True, False))
    for name, compiled, fast in variants:
        steps[name], params[name] = lmforge_step(compiled, fast)
    ours_names = [name for name, _, _ in variants]
    if not args.no_peer:
        peer = build_peer(cfg).to(args.device).train()
        if args.peer_optim == "same":
            peer_optim = make_optimizer(list(peer.parameters()), args.lr)
        else:
            peer_optim = torch.optim.AdamW(peer.parameters(), lr=args.lr)

        def peer_step(i: int) -> None:
            inp, _, _, labels = batches[i % len(batches)]
            with autocast():
                loss = peer(input_ids=inp, labels=labels).loss
            peer_optim.zero_grad(set_to_none=True)
            loss.backward()
            peer_optim.step()

        steps[PEER_NAME] = peer_step
        params[PEER_NAME] = sum(p.numel() for p in peer.parameters())

    def measure_peak() -> float:
        return measure_matmul_peak_flops(
            peak_dtype,
            n=1024 if args.device == "cpu" else 8192,
            device=args.device,
            seconds=args.peak_seconds,
        )

    peak = measure_peak()

    # Warm-up (allocator, thread pool, compilation) is never timed.
    for step in steps.values():
        for i in range(args.warmup):
            step(i)
    # Seconds per round per model; the figures below are medians over the rounds (a burst of
    # load from elsewhere spoils one round, not the result).
    rounds: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        for name, step in steps.items():
            rounds[name].append(timed_steps(step, r * args.steps, args.steps))

    # The peak is re-measured afterwards and the best kept: a busy moment lowers it, and an
    # underestimated peak would overstate MFU.
    peak = max(peak, measure_peak())

    results = []
    for name, seconds in rounds.items():
        median = statistics.median(seconds)
        tps = args.steps * tokens_per_step / median
        results.append(
            Result(
                name=name,
                tokens_per_s=tps,
                step_ms=1000.0 * median / args.steps,
                mfu=tps * flops_per_token / peak,
                params=params[name],
                steps=args.rounds * args.steps,
                round_tokens_per_s=[args.steps * tokens_per_step / t for t in seconds],
            )
        )

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} x seq "
        f"{args.seq}, vocab {args.vocab}, d {args.width}, L {args.layers}, H {args.heads}, "
        f"FFN {args.ffn}, mask {masked_fraction:.3f}, dropout {args.dropout}, "
        f"compile {args.compile}, peer optim {args.peer_optim}"
    )
    precision = "bf16" if args.bf16 else "fp32"
    print(
        f"{precision} matmul peak on {args.device}: {peak / 1e9:.1f} GFLOP/s; "
        f"model FLOPs/token: {flops_per_token:.3e}"
    )
    print(f"{'model':<20} {'params':>10} {'tokens/s':>10} {'step ms':>9} {'MFU':>7}")
    for res in results:
        print(
            f"{res.name:<20} {res.params:>10,} {res.tokens_per_s:>10.0f} {res.step_ms:>9.1f} "
            f"{100 * res.mfu:>6.1f}%"
        )
    ratios: dict[str, float] = {}
    if not args.no_peer:
        peer_rounds = rounds[PEER_NAME]
        for name in ours_names:
            # Per round (each round times both back to back), then the median of those ratios.
            per_round = [theirs / ours for ours, theirs in zip(rounds[name], peer_rounds, strict=True)]
            ratios[name] = statistics.median(per_round)
            shown = ", ".join(f"{r:.2f}" for r in per_round)
            print(f"ratio {name} / peer: {ratios[name]:.2f}x (median of {len(per_round)} rounds: {shown})")

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "masked_fraction": masked_fraction,
            "flops_per_token": flops_per_token,
            "matmul_peak_flops": peak,
            "results": [asdict(r) for r in results],
            "ratio_vs_peer": ratios,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
