"""Optimizers (AdamW, or Muon for the blocks' matrices beside AdamW for the rest) and the
learning-rate schedules (warm-up then cosine, or warm-up-stable-decay).

Every param group carries its own `peak_lr`; the schedule gives one multiplier per step, so a
single schedule drives AdamW and Muon although their learning rates differ by ten times or more.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from hellolondon.config import TrainConfig
from hellolondon.errors import UserError
from hellolondon.train.muon import Muon


def build_optimizer(model: nn.Module, cfg: TrainConfig, device_type: str, log=print):
    """AdamW for everything (`train.optimizer=adamw`), or Muon for the 2-D weight matrices
    inside the transformer blocks and AdamW for embeddings, positions and LayerNorm gains.
    Matrices decay (with either optimizer), LayerNorm gains do not: the two console lines are
    the W&B guide's whatever the optimizer."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    log(f"num decayed parameter tensors: {len(decay)}, with {_count(decay):,} parameters")
    log(f"num non-decayed parameter tensors: {len(no_decay)}, with {_count(no_decay):,} parameters")
    if cfg.optimizer == "muon":
        hidden = [p for n, p in named if _is_hidden_matrix(n, p)]
        rest = [(n, p) for n, p in named if not _is_hidden_matrix(n, p)]
        log(
            f"optimizer: Muon for {len(hidden)} block matrices ({_count(hidden):,} parameters, "
            f"peak lr {cfg.muon_lr:g}), AdamW for the rest (peak lr {cfg.lr:g})"
        )
        return MuonWithAdamW(_muon(hidden, cfg), _adamw(rest, cfg, device_type))
    return _adamw(named, cfg, device_type)


def _count(params: list[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


def _is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    # the embedding is also the output head (tied); Muon is for the matrices between them
    return p.dim() == 2 and ".h." in f".{name}"


def _adamw(named: list[tuple[str, torch.Tensor]], cfg: TrainConfig, device_type: str):
    """Matrices (weights of linear layers and embeddings) decay; LayerNorm gains do not."""
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # the fused kernel does the whole update in one launch per group on CUDA
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    optimizer = torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=1e-8,
        **({"fused": True} if fused else {}),
    )
    betas = (cfg.beta1, cfg.beta2)
    _settings_from_config(
        optimizer,
        [
            {"peak_lr": cfg.lr, "weight_decay": cfg.weight_decay, "betas": betas},
            {"peak_lr": cfg.lr, "weight_decay": 0.0, "betas": betas},
        ],
    )
    return optimizer


def _muon(params: list[torch.Tensor], cfg: TrainConfig) -> Muon:
    optimizer = Muon(
        params,
        lr=cfg.muon_lr,
        momentum=cfg.muon_momentum,
        weight_decay=cfg.muon_weight_decay,
        nesterov=True,
    )
    settings = {"peak_lr": cfg.muon_lr, "weight_decay": cfg.muon_weight_decay}
    _settings_from_config(optimizer, [{**settings, "momentum": cfg.muon_momentum}])
    return optimizer


def _settings_from_config(
    optimizer: torch.optim.Optimizer, per_group: list[dict[str, Any]]
) -> None:
    """Set each group's settings from the config (`peak_lr`, weight decay, betas or momentum)
    now and again after every `load_state_dict`: a checkpoint restores the optimizer's state
    and, with it, the settings it was saved with, but those given on resume (`train.lr=...`,
    `train.weight_decay=...`) must win, as `config.json` and the tracker record them."""

    def apply(opt) -> None:
        for group, settings in zip(opt.param_groups, per_group, strict=True):
            group.update(settings)

    apply(optimizer)
    optimizer.register_load_state_dict_post_hook(apply)


class MuonWithAdamW:
    """Muon and AdamW behind the one optimizer interface the trainer, the grad scaler and the
    checkpoints use: `param_groups`, `step`, `zero_grad`, `state_dict`, `load_state_dict`.
    The state dict nests the two plain state dicts, so `torch.load(weights_only=True)` reads it."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw
        params = [p for group in adamw.param_groups for p in group["params"]]
        self._on_cpu = all(p.device.type == "cpu" for p in params)  # asked once, not per step

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def parts(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self.muon, self.adamw

    def step(self, closure=None) -> None:
        self.muon.step()
        with _one_thread_if(self._on_cpu):
            self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if set(saved) != {"muon", "adamw"}:
            raise UserError(
                "the checkpoint holds AdamW state only; resume it with train.optimizer=adamw"
            )
        self.muon.load_state_dict(saved["muon"])
        self.adamw.load_state_dict(saved["adamw"])


@contextlib.contextmanager
def _one_thread_if(on_cpu: bool) -> Iterator[None]:
    """On a CPU, AdamW's update beside Muon rounded differently from one process to the next
    when other work competed for the cores (3 of 10 to 4 of 14 runs of a tiny model on two
    threads, the embedding first); on one thread it gave the same bits in 14 of 14. The
    update is a few element-wise passes, a small part of a CPU step. GPUs are left alone."""
    if not on_cpu or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def lr_scale(it: int, cfg: TrainConfig) -> float:
    """The schedule as a multiplier of each group's peak lr: linear warm-up from 0, then cosine
    decay or warm-up-stable-decay (`train.schedule`) down to min_lr/lr, then flat there."""
    if it < cfg.warmup_iters:
        return (it + 1) / (cfg.warmup_iters + 1)
    end = cfg.decay_end
    floor = cfg.min_lr / cfg.lr
    if it >= end:
        return floor
    if cfg.schedule == "wsd":
        # stable at the peak until the cool-down, which always ends at `end`: extending or
        # shortening max_iters on resume moves the cool-down, the stable phase just goes on
        left = (end - it) / (end - cfg.cooldown_start)  # 1 where the cool-down starts, -> 0
        if left >= 1:
            return 1.0
        done = 1.0 - left
        shape = 1.0 - done if cfg.cooldown_shape == "linear" else 1.0 - math.sqrt(done)
        return floor + shape * (1.0 - floor)
    ratio = (it - cfg.warmup_iters) / max(1, end - cfg.warmup_iters)
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - floor)
