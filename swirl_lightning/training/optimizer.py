"""The optimizer and learning-rate schedule of :class:`~swirl_lightning.training.config.OptimizerConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from swirl_lightning.training.config import OptimizerConfig


def build_optimizer(config: OptimizerConfig, params: Iterable[torch.nn.Parameter], total_steps: int) -> dict:
    """AdamW (or 8-bit AdamW) over ``params`` with linear warm-up, then constant, cosine or linear decay to 0 at
    ``total_steps``; in Lightning's ``configure_optimizers`` format (the schedule steps per optimizer step)."""
    params = list(params)
    if config.name == "adamw8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    else:
        # On a CPU the default loops over the tensors one by one; the fused kernel updates them all in a few passes.
        fused = bool(params) and all(type(p) is torch.nn.Parameter and p.device.type == "cpu" for p in params)
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                      fused=fused or None)
    total = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min((step - config.warmup_steps) / max(total - config.warmup_steps, 1), 1.0)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress if config.schedule == "linear" else 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
