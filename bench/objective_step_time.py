"""Seconds per pretraining step of masked LM vs causal LM for the SST-2 shape, on this machine.

The causal LM runs its head (dense + vocabulary projection) at every position, masked LM at the
15 % it masks, so a causal step costs more: this sizes ``pretrain.max_steps`` for a time budget.
Alternates the two objectives (twice each) so that a busy machine slows both alike::

    python bench/objective_step_time.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmforge.data.masking import mask_tokens, next_token_targets  # noqa: E402
from lmforge.models.transformer import MaskedLM, TransformerConfig  # noqa: E402


def seconds_per_step(objective: str, batch: torch.Tensor, vocab: int, steps: int) -> float:
    cfg = TransformerConfig(
        vocab_size=vocab,
        d_model=256,
        n_layers=4,
        n_heads=4,
        d_ff=1024,
        max_len=128,
        causal=objective == "clm",
    )
    torch.manual_seed(0)
    model = MaskedLM(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    masks = torch.Generator().manual_seed(0)

    def step() -> None:
        if objective == "clm":
            args = next_token_targets(batch)
        else:
            args = mask_tokens(
                batch,
                mask_rate=0.15,
                mask_id=4,
                vocab_size=vocab,
                special_ids=[0, 1, 2, 3, 4],
                generator=masks,
            )
        loss, _ = model(*args)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch = torch.randint(5, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"mlm": [], "clm": []}
    for objective in ("mlm", "clm", "mlm", "clm"):
        times[objective].append(seconds_per_step(objective, batch, args.vocab, args.steps))
    for objective, values in times.items():
        print(
            f"{objective}: {min(values):.3f}-{max(values):.3f} s/step "
            f"({args.batch * args.seq / min(values):.0f} tokens/s at best)"
        )
    print(f"clm / mlm step time: {min(times['clm']) / min(times['mlm']):.2f}x")


if __name__ == "__main__":
    main()
