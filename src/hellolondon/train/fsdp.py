"""FSDP2 (`fully_shard`): each rank keeps 1/world of the parameters, gradients and optimizer
state, for models whose AdamW state does not fit one GPU beside the activations.

Checkpoints stay in the single-process format: the full state is gathered onto rank 0 (in CPU
memory) and written as usual, so `generate`, `export` and a one-process resume read them
unchanged, and an FSDP run can resume from any checkpoint, at any world size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from hellolondon.errors import UserError


def _api() -> Any:
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        raise UserError(
            f"train.fsdp=true needs torch >= 2.6 (FSDP2 `fully_shard`); this is torch "
            f"{torch.__version__}. Upgrade torch, or train with DDP (train.fsdp=false)"
        ) from None
    return fully_shard, MixedPrecisionPolicy


def shard(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Shard each transformer block, then the rest (embeddings, final norm, the tied head) as
    one unit, so the tied matrix lives in a single group. Weights are gathered in `dtype` for
    compute and gradients reduced in float32; the master weights stay float32."""
    if dtype == torch.float16:
        raise UserError("train.fsdp=true supports float32 and bfloat16; set train.dtype=bfloat16")
    fully_shard, MixedPrecisionPolicy = _api()
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    blocks = list(model.transformer.h)
    for i, block in enumerate(blocks):
        # the last block's parameters are needed again at once for the backward pass
        fully_shard(block, mp_policy=policy, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mp_policy=policy)
    return model


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order: index i of `optimizer.state_dict()` is name i."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state, optimizer state) gathered whole on rank 0, keyed as a plain model's
    `state_dict()` and a plain optimizer's `state_dict()`. Every rank must call this."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    weights = get_model_state_dict(model, options=_options())
    optim = get_optimizer_state_dict(model, optimizer, options=_options())
    if not weights:  # ranks other than 0 receive nothing with cpu_offload
        return {}, {}
    index = {n: i for i, n in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in optim["param_groups"]]
    return weights, {
        "state": {index[n]: s for n, s in optim["state"].items()},
        "param_groups": groups,
    }


def load_model(model: nn.Module, weights: dict, sharded: bool) -> None:
    """Load a plain model `state_dict()`; with FSDP every rank passes the full weights and keeps
    its own shard."""
    if not sharded:
        model.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def load_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict, sharded: bool
) -> None:
    """Load a plain optimizer `state_dict()` (saved at any world size, with or without FSDP);
    with FSDP every rank passes the full state and keeps its own shard."""
    if not sharded:
        optimizer.load_state_dict(saved)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _param_names(model, optimizer)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]
    state = {names[i]: s for i, s in saved["state"].items()}
    set_optimizer_state_dict(
        model,
        optimizer,
        {"state": state, "param_groups": groups},
        options=StateDictOptions(full_state_dict=True),
    )
