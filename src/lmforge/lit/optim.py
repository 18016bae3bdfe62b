"""AdamW with decoupled weight decay and a warmup-then-linear-decay schedule, shared by both
LightningModules."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms and embeddings are left undecayed (as in BERT/GPT)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "emb" in name or "norm" in name or name.endswith("bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_linear(step: int, total: int, warmup: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(floor, 1.0 - (1.0 - floor) * progress)


def adamw(groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999)
          ) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (one kernel for all parameters, CPU and GPU alike) where this
    torch build has it, else the multi-tensor ``foreach`` path: no per-parameter Python loop."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def configure(model: nn.Module, cfg: OptimConfig, total_steps: int) -> dict:
    """What ``LightningModule.configure_optimizers`` returns: AdamW plus a per-step schedule."""
    optimizer = adamw(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear(step, total_steps, warmup, cfg.min_lr_ratio))
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}
