"""AdamW with decay and no-decay groups, and the learning-rate schedule."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn

from hellolondon.config import TrainConfig


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, device_type: str, log=print
) -> torch.optim.AdamW:
    """Matrices (weights of linear layers and embeddings) decay; LayerNorm gains do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    log(
        f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters"
    )
    log(
        f"num non-decayed parameter tensors: {len(no_decay)}, with {sum(p.numel() for p in no_decay):,} parameters"
    )
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel does the whole update in one launch per group on CUDA
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=1e-8,
        **({"fused": True} if fused else {}),
    )


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0 to lr, then cosine decay to min_lr, then flat at min_lr."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it >= decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)
