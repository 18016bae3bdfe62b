"""Generation throughput: lmforge PrefixLM + generate() vs Hugging Face GPT2LMHeadModel.generate.

Greedy decoding with a KV cache on both, the same prompts (random token ids, no padding) and
the same number of new tokens (the peer gets ``min_new_tokens = max_new_tokens``, lmforge no
end-of-sequence id), at batch 1 and batch 32. The two are timed in alternating runs in one
process so that load from other processes on a shared machine hits both alike; each figure is
the median of ``--runs`` runs. New tokens/s counts generated tokens only (prompt excluded).

    python bench/generate_throughput.py                      # defaults below
    python bench/generate_throughput.py --batch 1 8 --json reports/generate_throughput.json

The peer is random-initialised from a ``GPT2Config`` of the same shape (nothing downloaded):
vocabulary, width, layers, heads, FFN width, context, GELU, and SDPA attention. lmforge's model
has a slightly larger LM head (MaskedLM's dense + LayerNorm before the tied projection), which
costs it one extra D x D matmul per token.
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import synchronize  # noqa: E402

from lmforge.models.decoder import PrefixLM  # noqa: E402
from lmforge.models.generation import generate  # noqa: E402
from lmforge.models.transformer import TransformerConfig  # noqa: E402

PAD, EOS = 0, 3
FIRST_ORDINARY_ID = 5  # ids below are specials in an lmforge tokenizer
OURS = "lmforge PrefixLM"
PEER = "HF GPT2LMHeadModel"


@dataclass
class Result:
    name: str
    batch: int
    new_tokens_per_s: float
    run_s: float  # median seconds per generate() call
    runs: list[float]
    params: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--width", type=int, default=256, help="d_model / n_embd")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024, help="d_ff / n_inner")
    p.add_argument("--context", type=int, default=256, help="max_len / n_positions")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument(
        "--new-tokens", type=int, default=224, help="new tokens per row (prompt + new tokens <= context)"
    )
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--runs", type=int, default=3, help="timed runs per model and batch size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-peer", action="store_true", help="time lmforge only")
    p.add_argument("--json", type=Path, default=None, help="also write results to this file")
    return p.parse_args(argv)


def build_peer(cfg: TransformerConfig) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_ff,
        activation_function="gelu",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.norm_eps,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    # Older transformers reject the setting: they then keep their default attention.
    with contextlib.suppress(AttributeError, ValueError):
        gpt2_cfg._attn_implementation = "sdpa"
    return GPT2LMHeadModel(gpt2_cfg)


def timed(run: Callable[[], None]) -> float:
    synchronize()
    start = time.perf_counter()
    run()
    synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prompt_len + args.new_tokens > args.context:
        raise SystemExit(
            f"--prompt-len {args.prompt_len} + --new-tokens {args.new_tokens} "
            f"exceeds --context {args.context}"
        )
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = TransformerConfig(
        vocab_size=args.vocab,
        d_model=args.width,
        n_layers=args.layers,
        n_heads=args.heads,
        d_ff=args.ffn,
        max_len=args.context,
        dropout=0.1,
        pad_id=PAD,
    )
    ours = PrefixLM(cfg).to(args.device).eval()
    peer = None if args.no_peer else build_peer(cfg).to(args.device).eval()
    n = args.new_tokens

    def make_runs(batch: int) -> dict[str, Callable[[], None]]:
        g = torch.Generator().manual_seed(args.seed + batch)
        prompts = torch.randint(FIRST_ORDINARY_ID, args.vocab, (batch, args.prompt_len), generator=g)
        prompt_lists = prompts.tolist()
        runs: dict[str, Callable[[], None]] = {}

        def run_ours() -> None:
            out = generate(ours, prompt_lists, max_new_tokens=n, eos_id=None)
            assert all(len(t) == n for t in out.tokens)

        runs[OURS] = run_ours
        if peer is not None:
            input_ids = prompts.to(args.device)
            attention_mask = torch.ones_like(input_ids)

            def run_peer() -> None:
                with torch.inference_mode():
                    out = peer.generate(
                        input_ids,
                        attention_mask=attention_mask,
                        max_new_tokens=n,
                        min_new_tokens=n,
                        do_sample=False,
                        num_beams=1,
                        use_cache=True,
                        pad_token_id=PAD,
                        eos_token_id=EOS,
                    )
                assert out.shape == (batch, args.prompt_len + n), out.shape

            runs[PEER] = run_peer
        return runs

    params = {OURS: ours.num_parameters()}
    if peer is not None:
        params[PEER] = sum(p.numel() for p in peer.parameters())
    results: list[Result] = []
    for batch in args.batch:
        runs = make_runs(batch)
        for run in runs.values():  # warm-up: allocator, thread pool, kernel selection
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.runs):
            for name, run in runs.items():
                times[name].append(timed(run))
        for name, seconds in times.items():
            median = statistics.median(seconds)
            results.append(
                Result(
                    name=name,
                    batch=batch,
                    new_tokens_per_s=batch * n / median,
                    run_s=median,
                    runs=seconds,
                    params=params[name],
                )
            )

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
        f"vocab {args.vocab}, d {args.width}, L {args.layers}, H {args.heads}, FFN {args.ffn}, "
        f"context {args.context}, prompt {args.prompt_len} + {n} new tokens, greedy, KV cache, "
        f"median of {args.runs} runs"
    )
    # The spread of the runs shows how steady the machine was (a shared one is not).
    print(f"{'model':<20} {'params':>10} {'batch':>5} {'new tok/s':>10} {'run s':>8} {'runs min-max s':>15}")
    for res in results:
        print(
            f"{res.name:<20} {res.params:>10,} {res.batch:>5} {res.new_tokens_per_s:>10.0f} "
            f"{res.run_s:>8.2f} {min(res.runs):>7.2f}-{max(res.runs):<7.2f}"
        )
    ratios: dict[int, float] = {}
    if peer is not None:
        by_key = {(r.name, r.batch): r for r in results}
        for batch in args.batch:
            ratios[batch] = by_key[(OURS, batch)].new_tokens_per_s / by_key[(PEER, batch)].new_tokens_per_s
            print(f"ratio lmforge / peer at batch {batch}: {ratios[batch]:.2f}x")

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "results": [asdict(r) for r in results],
            "ratio_vs_peer": {str(k): v for k, v in ratios.items()},
            "cpu_count": os.cpu_count(),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
