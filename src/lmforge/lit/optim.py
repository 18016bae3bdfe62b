"""AdamW with decoupled weight decay and a warmup-then-linear-decay schedule, shared by both
LightningModules."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from lmforge.core.config import OptimConfig

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_depth(name: str, n_layers: int) -> int:
    """0 for the embeddings, ``i + 1`` for encoder block ``i``, ``n_layers + 1`` above them (the
    final norm and the task head)."""
    if "tok_emb" in name or "pos_emb" in name:
        return 0
    block = _BLOCK.search(name)
    return int(block.group(1)) + 1 if block else n_layers + 1


def param_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, layer_decay: float = 1.0
) -> list[dict]:
    """Decay matrices only: biases, norms and embeddings are left undecayed (as in BERT/GPT).

    ``layer_decay`` < 1 gives each layer its own learning rate, ``lr * layer_decay ** k`` for
    the layer ``k`` steps below the top (ELECTRA's layer-wise decay): a pretrained encoder's
    lower layers move least while the new head learns at the full rate.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    blocks = [int(m.group(1)) for n, _ in named if (m := _BLOCK.search(n))]
    n_layers = max(blocks) + 1 if blocks else 0
    groups: dict[tuple[int, bool], list] = {}
    for name, param in named:
        depth = layer_depth(name, n_layers) if layer_decay != 1.0 else n_layers + 1
        lowered = name.lower()  # transformers spells it LayerNorm
        decayed = not (param.ndim < 2 or "emb" in lowered or "norm" in lowered or name.endswith("bias"))
        groups.setdefault((depth, decayed), []).append(param)
    out = []
    for (depth, decayed), params in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
        if layer_decay != 1.0:
            if lr is None:
                raise ValueError("layer_decay needs the base lr")
            group["lr"] = lr * layer_decay ** (n_layers + 1 - depth)
        out.append(group)
    return out


def warmup_linear(step: int, total: int, warmup: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(floor, 1.0 - (1.0 - floor) * progress)


def adamw(groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (one kernel for all parameters, CPU and GPU alike) where this
    torch build has it, else the multi-tensor ``foreach`` path: no per-parameter Python loop."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def scheduled_steps(module: Any, planned: int) -> int:
    """The optimizer steps the LR schedule spans: ``planned`` (for one process), or under DDP
    Lightning's count once the ranks are known, as each rank's epoch is then a share of the
    split (an epoch-bound schedule planned for one process would stop halfway at two)."""
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return planned
    return int(trainer.estimated_stepping_batches)


def configure(model: nn.Module, cfg: OptimConfig, total_steps: int) -> dict:
    """What ``LightningModule.configure_optimizers`` returns: AdamW plus a per-step schedule."""
    optimizer = adamw(
        param_groups(model, cfg.weight_decay, cfg.lr, cfg.layer_decay), lr=cfg.lr, betas=tuple(cfg.betas)
    )
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear(step, total_steps, warmup, cfg.min_lr_ratio)
    )
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1},
    }
