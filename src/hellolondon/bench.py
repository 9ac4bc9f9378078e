"""Time training steps of a preset on random tokens: the same step the trainer runs (model,
AdamW, autocast, compile), warm-up excluded, so the numbers compare with reference trainers."""

from __future__ import annotations

import math
import time

import torch

from hellolondon import hardware
from hellolondon.config import RunConfig
from hellolondon.rundir import RunDir
from hellolondon.tracking.base import NullTracker
from hellolondon.train.distributed import Dist
from hellolondon.train.run import Run, autocast_for, build_model, peak_flops_for, precision
from hellolondon.train.steps import train_step


class RandomBatches:
    """Uniform random tokens made on the device: no data loading in the measurement."""

    def __init__(self, vocab: int, block_size: int, device: torch.device, seed: int) -> None:
        self.vocab, self.T, self.device = vocab, block_size, device
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def train_batch(self, first: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        xy = torch.randint(
            0, self.vocab, (batch, self.T + 1), device=self.device, generator=self.gen
        )
        return xy[:, :-1], xy[:, 1:]

    def epoch_of(self, sample: int) -> float:
        return 0.0


def bench(cfg: RunConfig, steps: int = 20, warmup: int = 5, log=print) -> dict:
    device = hardware.resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    d = Dist(device=device)
    dtype = precision(cfg, device)
    model, step_model, opt, scaler = build_model(cfg, d, dtype, log)
    run = Run(
        cfg=cfg, dist=d, rundir=RunDir("."), model=model, step_model=step_model, optimizer=opt,
        scaler=scaler, autocast=autocast_for(device, dtype),
        batches=RandomBatches(cfg.model.vocab_size, cfg.model.block_size, device, cfg.train.seed),
        tracker=NullTracker(), monitor=None, meta={}, peak_flops=peak_flops_for(device), log=log,
    )  # fmt: skip
    for _ in range(warmup):  # compilation and allocator warm-up stay out of the timing
        train_step(run)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _, _ = train_step(run)  # syncs: the loss comes back to the host every step
    _sync(device)
    ms = 1000.0 * (time.perf_counter() - t0) / steps
    tps = run.tokens_per_step / (ms / 1000.0)
    result = {
        "device": hardware.device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "compile": cfg.train.compile,
        "batch_size": cfg.train.batch_size,
        "grad_accum": cfg.train.grad_accum,
        "block_size": cfg.model.block_size,
        "ms_per_iter": ms,
        "tokens_per_sec": tps,
        "mfu_percent": hardware.mfu_percent(run.flops_per_token, tps, 1, run.peak_flops),
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "final_loss": loss if math.isfinite(loss) else None,
    }
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
