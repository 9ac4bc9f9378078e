"""Time training steps of a preset on random tokens: the same step the trainer runs (model,
AdamW, autocast, compile, the speed options), warm-up excluded, so the numbers compare with
reference trainers. The first step's time (compilation) and the peak memory are reported too;
`repeat` times the steps in several windows (the median is reported, and every window, for the
spread); `profile` adds where the time of a step goes (`step_profile.py`)."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from hellolondon import hardware
from hellolondon.config import RunConfig
from hellolondon.rundir import RunDir
from hellolondon.step_profile import profile_steps
from hellolondon.tracking.base import NullTracker
from hellolondon.train import speed
from hellolondon.train.distributed import Dist
from hellolondon.train.run import (
    Run,
    announce_pace,
    autocast_for,
    build_model,
    check_fits_in_memory,
    peak_flops_for,
    precision,
)
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


def bench(
    cfg: RunConfig,
    steps: int = 20,
    warmup: int = 5,
    repeat: int = 1,
    profile: Path | None = None,
    log=print,
) -> dict:
    device = hardware.resolve_device(cfg.train.device)
    dtype = precision(cfg, device)
    peak = peak_flops_for(device)  # a bad HELLOLONDON_PEAK_TFLOPS is refused before the model
    check_fits_in_memory(cfg, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = _random_token_run(cfg, device, dtype, peak, log)
    announce_pace(run, 1 + max(0, warmup - 1) + steps * max(1, repeat) + 1, "steps it runs")
    first_step_s = _warm_up(run, warmup, device)
    windows = [_time_steps(run, steps, device) for _ in range(max(1, repeat))]
    loss = train_step(run).values[0].item()
    result = _result(run, device, dtype, windows, first_step_s, loss)
    if warning := speed.cuda_graph_warning(cfg, device):
        log(f"warning: {warning}")
    if profile is not None:
        trace = Path(profile) / "trace.json"
        result["profile"] = profile_steps(lambda: train_step(run), device, 3, trace)
        result["profile"]["trace"] = str(trace)
    return result


def _random_token_run(
    cfg: RunConfig, device: torch.device, dtype: torch.dtype, peak: float | None, log
) -> Run:
    """The trainer's model, optimizer and step on random batches, with no run folder or tracker."""
    d = Dist(device=device)
    model, step_model, opt, scaler = build_model(cfg, d, dtype, log)
    return Run(
        cfg=cfg, dist=d, rundir=RunDir("."), model=model, step_model=step_model, optimizer=opt,
        scaler=scaler, autocast=autocast_for(device, dtype),
        batches=RandomBatches(cfg.model.vocab_size, cfg.model.block_size, device, cfg.train.seed),
        tracker=NullTracker(), monitor=None, meta={}, peak_flops=peak, log=log,
    )  # fmt: skip


def _warm_up(run: Run, warmup: int, device: torch.device) -> float:
    """Run the warm-up steps, which stay out of the timing; returns the first step's seconds."""
    t0 = time.perf_counter()
    train_step(run)
    _sync(device)
    first_step_s = time.perf_counter() - t0  # compilation, autotuning, allocator warm-up
    for _ in range(max(0, warmup - 1)):  # the rest of the warm-up stays out of the timing too
        train_step(run)
    _sync(device)
    return first_step_s


def _result(
    run: Run,
    device: torch.device,
    dtype: torch.dtype,
    windows: list[float],
    first_step_s: float,
    loss: float,
) -> dict:
    """The settings benched and what was measured (the median window as ms_per_iter)."""
    cfg, c = run.cfg, run.cfg.train
    ms = statistics.median(windows)
    tps = run.tokens_per_step / (ms / 1000.0)
    size, count = speed.micro_batches(run.model, c)
    return {
        "device": hardware.device_name(device),
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "optimizer": c.optimizer,
        "compile": c.compile,
        "compiled": c.compiles(device.type),
        "compile_mode": c.compile_mode,
        "attention": c.attention,
        "fp8": c.fp8,
        "activation_checkpointing": c.activation_checkpointing,
        "batch_size": c.batch_size,
        "grad_accum": c.grad_accum,
        "micro_batch": size,
        "micro_steps": count,
        "block_size": cfg.model.block_size,
        "ms_per_iter": ms,
        "ms_per_iter_windows": windows,
        "tokens_per_sec": tps,
        "mfu_percent": hardware.mfu_percent(run.flops_per_token, tps, 1, run.peak_flops),
        "first_step_s": first_step_s,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "final_loss": loss if math.isfinite(loss) else None,
        "cuda_graph_skips": speed.cuda_graph_skips(cfg, device),  # None: no CUDA graphs asked
    }


def _time_steps(run: Run, steps: int, device: torch.device) -> float:
    """ms per step over `steps` steps queued back to back (results stay on the device, as in
    training between two log rows) and synchronised once at the end."""
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(run)
    _sync(device)
    return 1000.0 * (time.perf_counter() - t0) / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
