"""Everything a training run needs before its first step: process group, device and precision,
run folder, data, model, optimizer, restored checkpoint, tracker and health monitor."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hellolondon import hardware
from hellolondon.config import RunConfig, from_dict, get_preset
from hellolondon.errors import UserError
from hellolondon.model import GPT
from hellolondon.prepare import load_meta
from hellolondon.tracking.history import truncate_after
from hellolondon.tracking.setup import open_tracker
from hellolondon.train import checkpoint, fsdp
from hellolondon.train.data import Batches
from hellolondon.train.distributed import (
    Dist,
    batch_line,
    broadcast_object,
    init_distributed,
    resume_batch,
)
from hellolondon.train.optim import build_optimizer


@dataclass
class Run:
    cfg: RunConfig
    dist: Dist
    run_dir: Path
    model: GPT  # the plain module: state_dict, generation
    step_model: nn.Module  # what the loop calls: compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    batches: Batches
    tracker: Any
    monitor: Any
    meta: dict[str, Any]
    peak_flops: float | None
    step: int = 0
    samples_seen: int = 0
    best_val: float = math.inf
    history: dict[str, float] = field(default_factory=dict)  # last losses, for the summary
    eval_cache: dict[str, list] = field(default_factory=dict)  # the fixed held-out batches
    log: Callable[[str], None] = print

    @cached_property
    def flops_per_token(self) -> int:
        """Counted once: it walks every parameter."""
        return self.model.flops_per_token()

    @property
    def tokens_per_step(self) -> int:
        c = self.cfg.train
        return c.batch_size * c.grad_accum * self.dist.world_size * self.cfg.model.block_size

    @property
    def samples_per_step(self) -> int:
        c = self.cfg.train
        return c.batch_size * c.grad_accum * self.dist.world_size


def default_run_name(preset: str) -> str:
    return f"{get_preset(preset).run_prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def precision(cfg: RunConfig, device: torch.device) -> torch.dtype:
    want = cfg.train.dtype
    if want == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if want != "float32" and device.type == "cpu":
        return torch.bfloat16 if want == "bfloat16" else torch.float32
    return getattr(torch, want)


def _run_dir(cfg: RunConfig, resume_from: Path | None) -> Path:
    if resume_from is not None:
        return (
            resume_from.parent.parent if resume_from.parent.name == "checkpoints" else resume_from
        )
    out = Path(cfg.out_dir) / cfg.tracking.run_name
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"run folder {out} already exists; choose another --run-name or resume it with --resume {out}"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write the run folder {out} ({exc.strerror}); choose a writable out_dir"
        ) from None
    return out


def _restore(cfg: RunConfig, resume: str | None, log) -> tuple[Path | None, dict | None]:
    if not resume:
        return None, None
    ckpt, state = checkpoint.find_resumable(resume, log=log)
    saved = from_dict(state["config"])
    if saved.model != cfg.model:
        raise UserError(
            f"checkpoint {ckpt} is of another architecture ({saved.model}); resume with its own settings"
        )
    if saved.train.optimizer != cfg.train.optimizer:  # their states are not interchangeable
        raise UserError(
            f"checkpoint {ckpt} was trained with train.optimizer={saved.train.optimizer}; "
            "resume it with the same optimizer"
        )
    return ckpt, state


def setup_run(cfg: RunConfig, resume: str | None = None, log: Callable[[str], None] = print) -> Run:
    d = init_distributed(cfg.train.device, fsdp=cfg.train.fsdp)
    log = log if d.is_main else (lambda *_: None)
    data_dir = Path(cfg.data.data_dir)
    meta = load_meta(data_dir)
    cfg.model.vocab_size = int(meta["vocab_size"])
    ckpt, state = _restore(cfg, resume, log)
    if state is not None:
        resume_batch(cfg.train, state, d.world_size, log)  # the global batch on a new world size
        if state.get("tokenizer_fingerprint") != meta.get("tokenizer_fingerprint"):
            raise UserError(
                f"the token files in {data_dir} were made with another tokenizer than checkpoint {ckpt}"
            )
    # every rank must agree on the run folder: rank 0's clock names it
    cfg.tracking.run_name = broadcast_object(
        cfg.tracking.run_name or default_run_name(cfg.preset), d
    )
    if d.is_main:
        run_dir = _run_dir(cfg, ckpt.parent.parent if ckpt else None)
    else:
        run_dir = Path(cfg.out_dir) / cfg.tracking.run_name
    dtype = precision(cfg, d.device)
    model, step_model, optimizer, scaler = build_model(cfg, d, dtype, ckpt, state, log)
    run = Run(
        cfg=cfg, dist=d, run_dir=run_dir, model=model, step_model=step_model, optimizer=optimizer,
        scaler=scaler, autocast=autocast_for(d.device, dtype),
        batches=Batches(data_dir, cfg.model.block_size, cfg.train.seed, d.device),
        tracker=None, monitor=None, meta=meta, peak_flops=peak_flops_for(d.device), log=log,
    )  # fmt: skip
    if state is not None:
        _continue_from(run, ckpt, state)
    log(batch_line(d, cfg.train.batch_size, cfg.train.grad_accum, cfg.model.block_size))
    _open_tracking(run, dtype, (state or {}).get("tracker_run_id"))
    return run


def build_model(
    cfg: RunConfig, d: Dist, dtype: torch.dtype, ckpt: Path | None, state: dict | None, log
):
    """Model (restored if resuming), its compiled/wrapped twin, optimizer and grad scaler."""
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for fp32 matmuls left by autocast
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (FSDP needs it)
    model = GPT(cfg.model).to(d.device)
    torch.manual_seed(cfg.train.seed + d.rank)  # then per-rank streams (dropout)
    log(f"Model parameters: {model.num_params():,}")
    scaler = torch.amp.GradScaler(d.device.type, enabled=dtype == torch.float16)
    if state is not None:
        model.load_state_dict(checkpoint.load_weights(ckpt))
        scaler.load_state_dict(state.get("scaler") or {})
    step_model = _wrap(model, cfg, d)
    # after wrapping: FSDP replaces the parameters with shards, which the optimizer must hold
    optimizer = build_optimizer(model, cfg.train, d.device.type, log=log)
    if state is not None:
        saved = checkpoint.load_tensors(ckpt / "optimizer.pt")
        fsdp.load_optimizer(model, optimizer, saved, d.fsdp)
    return model, step_model, optimizer, scaler


def autocast_for(
    device: torch.device, dtype: torch.dtype
) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def peak_flops_for(device: torch.device) -> float | None:
    """Peak FLOP/s for MFU; on a CPU only an explicit HELLOLONDON_PEAK_TFLOPS gives one."""
    name = hardware.device_name(device) if device.type == "cuda" else ""
    return hardware.peak_flops(name)


def _continue_from(run: Run, ckpt: Path, state: dict) -> None:
    d = run.dist
    run.step, run.samples_seen = state["step"], state["samples_seen"]
    run.best_val = state.get("best_val_loss") or math.inf
    rng = checkpoint.load_tensors(ckpt / "rng.pt")
    checkpoint.set_rng_state(state["rng"], rng, d.rank, d.world_size, d.device)
    if d.is_main:
        truncate_after(run.run_dir / "metrics.jsonl", run.step)  # recomputed exactly
    run.log(f"resumed from {ckpt} at iteration {run.step}")


def _open_tracking(run: Run, dtype: torch.dtype, resume_run_id: str | None) -> None:
    d, cfg = run.dist, run.cfg
    full = run_config(run, dtype)  # loads the tokenizer and asks the hardware: once
    if d.is_main:
        _write_run_files(run, full)
    run.tracker = open_tracker(
        cfg, run.run_dir, rank=d.rank, run_config=full, resume_run_id=resume_run_id
    )
    if d.is_main and cfg.monitor.enabled:
        from hellolondon.tracking.monitor import HealthMonitor

        run.monitor = HealthMonitor(
            cfg.monitor, run.tracker, max_iters=cfg.train.max_iters, console=run.log
        )


def config_for_resume(resume: str, config_file: str | None, overrides: list[str]) -> RunConfig:
    """The saved config of the checkpoint to resume, with the given file and overrides on top
    (to extend max_iters, say). Architecture changes are refused later, by `_restore`."""
    from hellolondon.config import build_config

    state = checkpoint.read_state(checkpoint.resolve(resume), verify=False)
    return build_config(
        config_file=config_file, overrides=overrides, base=from_dict(state["config"])
    )


def _wrap(model: GPT, cfg: RunConfig, d: Dist) -> nn.Module:
    compiled: nn.Module = model
    use_compile = cfg.train.compile == "true" or (
        cfg.train.compile == "auto" and d.device.type == "cuda"
    )
    if d.fsdp:
        # sharded in place: `model` itself gathers its shards on every call, eval included
        fsdp.shard(model, precision(cfg, d.device))
        return torch.compile(model) if use_compile else model
    if use_compile:
        compiled = torch.compile(model)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [d.device.index] if d.device.type == "cuda" else None
        compiled = DDP(compiled, device_ids=ids)
    return compiled


def _token_counts(meta: dict[str, Any]) -> dict[str, int | None]:
    """Control tokens, and the historical terms that are one token each, of the run's tokenizer."""
    from hellolondon.tokenizer import historical_terms, load_tokenizer

    path = meta.get("tokenizer_path")
    if not path or not (Path(path) / "tokenizer.json").is_file():
        return {"special_tokens": None, "historical_tokens": None}
    tok = load_tokenizer(path)
    single = sum(len(tok.encode(" " + term)) == 1 for term in historical_terms())
    return {"special_tokens": len(tok.hf.get_added_tokens_decoder()), "historical_tokens": single}


def run_config(run: Run, dtype: torch.dtype) -> dict[str, Any]:
    """The full run config for the tracker: settings, model, data and hardware facts."""
    cfg, m, meta = run.cfg, run.cfg.model, run.meta
    return {
        **cfg.to_dict(),
        "model_info": {
            "preset": cfg.preset,
            "n_layer": m.n_layer,
            "n_head": m.n_head,
            "n_embd": m.n_embd,
            "parameters": run.model.num_params(),
            "parameters_total": run.model.num_params(False),
            "vocab_size": m.vocab_size,
            "context_length": m.block_size,
            **_token_counts(meta),
        },
        "data_info": {
            "corpus": cfg.data.corpus,
            "period": cfg.data.period,
            "documents": meta.get("train_documents", 0) + meta.get("val_documents", 0),
            "train_tokens": meta.get("train_tokens"),
            "val_tokens": meta.get("val_tokens"),
            "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
        },
        "hardware": {
            **hardware.hardware_facts(run.dist.device),
            "dtype": str(dtype).replace("torch.", ""),
            "world_size": run.dist.world_size,
            "distributed": run.dist.enabled,
            "peak_flops": run.peak_flops,
            "tokens_per_step": run.tokens_per_step,
        },
    }


def _write_run_files(run: Run, full_config: dict[str, Any]) -> None:
    from hellolondon.tracking.secrets import scrub

    (run.run_dir / "config.json").write_text(json.dumps(scrub(full_config), indent=2))
    tok_src = run.meta.get("tokenizer_dir") or run.meta.get("tokenizer_path")
    tok_dst = run.run_dir / "tokenizer"
    if tok_src and (Path(tok_src) / "tokenizer.json").is_file() and not tok_dst.exists():
        shutil.copytree(tok_src, tok_dst)
