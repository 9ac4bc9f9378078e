"""The config is resolved once, before training: every default that depends on the data, the
world size, the checkpoint resumed, the clock or the environment is decided here and written
into the config, which is then saved as used (in the run folder and every checkpoint)."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from hellolondon.config import RunConfig, from_dict, get_preset
from hellolondon.errors import UserError
from hellolondon.rundir import RunDir
from hellolondon.tracking.wandb_options import automatic, env_run_name, resolve_tracking
from hellolondon.train.distributed import resume_batch, split_batch


def default_run_name(preset: str) -> str:
    """london-<kind>-YYYYMMDD-HHMMSS; a trial of `wandb agent` adds the W&B run id the agent
    gave it, since agents side by side (one per GPU) start trials within the same second."""
    name = f"{get_preset(preset).run_prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    agent_run = re.sub(r"[^A-Za-z0-9_-]", "", os.environ.get("WANDB_RUN_ID", ""))[:32]
    return f"{name}-{agent_run}" if agent_run and os.environ.get("WANDB_SWEEP_ID") else name


def resolve_config(
    cfg: RunConfig,
    *,
    world: int,
    meta: dict[str, Any],
    ckpt: Path | None = None,
    state: dict[str, Any] | None = None,
    global_batch: int | None = None,
    agree: Callable[[str], str] = lambda name: name,
    log: Callable[[str], None] = print,
) -> RunConfig:
    """A resolved copy of `cfg` for a run on `world` processes over token files described by
    `meta`, new or resuming `ckpt` (whose state.json is `state`). `agree` makes every rank take
    rank 0's run name. Resolving a resolved config changes nothing."""
    cfg = copy.deepcopy(cfg)
    t = cfg.train
    vocab = int(meta["vocab_size"])
    if cfg.model.vocab_size not in (vocab, get_preset(cfg.preset).model.vocab_size):
        log(f"note: model.vocab_size={cfg.model.vocab_size} is not used: the model takes the "
            f"token files' vocabulary, {vocab:,} (their meta.json)")  # fmt: skip
    cfg.model.vocab_size = vocab
    if global_batch is not None and global_batch < 1:
        raise UserError("--global-batch must be at least 1")
    if state is not None:
        _check_architecture(cfg, ckpt, state)
        _check_steps_left(cfg, ckpt, state)
        resume_batch(t, state, world, log, global_batch)  # the global batch on a new world size
    elif global_batch is not None:
        t.batch_size, t.grad_accum = split_batch(global_batch, world, max_batch=t.batch_size)
    # fixed for the whole run: eval_iters global batches, so the same global batch evaluates
    # the same held-out sequences however it is split (processes, accumulation)
    t.eval_seqs = t.eval_seqs or t.eval_iters * t.batch_size * t.grad_accum * world
    home = RunDir.of_checkpoint(ckpt) if ckpt is not None else None
    name = cfg.tracking.run_name
    if home is not None:  # the run goes on in its own folder (out_dir kept as written if it is)
        if Path(cfg.out_dir).resolve() != home.path.parent.resolve():
            cfg.out_dir = str(home.path.parent)
        name = home.path.name
    elif state is not None and name == state["config"]["tracking"].get("run_name"):
        name = ""  # a checkpoint kept outside its run folder starts a run folder of its own
    name = agree(name or env_run_name() or default_run_name(cfg.preset))
    # a mode chosen by circumstance (no key, say) is chosen again at each start: a resume or a
    # rerun from a saved config decides it anew; a mode that was asked for stays
    cfg.tracking = resolve_tracking(automatic(cfg.tracking), cfg.preset, name)
    return cfg


def _check_architecture(cfg: RunConfig, ckpt: Path | None, state: dict[str, Any]) -> None:
    saved = from_dict(state["config"])
    # dropout is a training setting kept in the model's: the weights are the same without it
    shape = [f.name for f in dataclasses.fields(saved.model) if f.name != "dropout"]
    changed = [
        f"model.{k}={getattr(cfg.model, k)} (it has {getattr(saved.model, k)})"
        for k in shape
        if getattr(saved.model, k) != getattr(cfg.model, k)
    ]
    if changed:
        raise UserError(
            f"checkpoint {ckpt} is of another architecture: {', '.join(changed)}; resume with "
            "its own shape, or start a new run"
        )
    if saved.train.optimizer != cfg.train.optimizer:  # their states are not interchangeable
        if saved.train.optimizer == "muon" and cfg.train.fsdp:  # adamw is no way on here
            raise UserError(
                f"checkpoint {ckpt} was trained with train.optimizer=muon, which FSDP cannot "
                "run (Muon needs whole matrices, FSDP shards them); resume it with DDP "
                "(train.fsdp=false) and train.optimizer=muon"
            )
        raise UserError(
            f"checkpoint {ckpt} was trained with train.optimizer={saved.train.optimizer}; "
            "resume it with the same optimizer"
        )


def _check_steps_left(cfg: RunConfig, ckpt: Path | None, state: dict[str, Any]) -> None:
    """A resume with other settings must have steps left to train with them: else the run's
    record would say it was trained with settings that no step used."""
    from hellolondon.provenance import settings_changed

    step, last = int(state["step"]), cfg.train.max_iters
    if step > last:
        raise UserError(
            f"checkpoint {ckpt} is at iteration {step}, past train.max_iters={last}; set "
            f"train.max_iters above {step} to train further, or evaluate or export it as it is"
        )
    changed = settings_changed(state["config"], cfg.to_dict()) if step == last else {}
    if changed:
        named = ", ".join(f"{k}={new}" for k, (_, new) in changed.items())
        raise UserError(
            f"checkpoint {ckpt} has trained all {last} iterations, so {named} would change no "
            f"step; raise train.max_iters above {step} to train further with it"
        )
