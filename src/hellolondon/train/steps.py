"""What the training loop calls: one optimizer step, evaluation, logging, checkpoints, samples."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator

import torch

from hellolondon.hardware import gpu_metrics, mfu_percent
from hellolondon.tracking.secrets import scrub
from hellolondon.train import checkpoint
from hellolondon.train.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    gather_object,
    grad_sync,
    shutdown,
)
from hellolondon.train.optim import lr_scale
from hellolondon.train.run import Run


class StopSignal:
    """SIGTERM (a scheduler's notice before pre-emption) or a first Ctrl-C asks the loop to
    stop after the current step, write a checkpoint and flush tracking; a second Ctrl-C aborts.

    With several processes the signal reaches them at slightly different moments, so a rank
    only marks it `pending`; `train_step` turns that into `requested` on every rank at once (a
    flag in the all-reduce it already makes), and all ranks leave after the same step."""

    def __init__(self, distributed: bool = False, verbose: bool = True) -> None:
        self.requested = False  # what the loop acts on
        self.pending = False  # this process got the signal
        self.distributed, self.verbose = distributed, verbose
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.pending and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.pending = True
        self.requested = self.requested or not self.distributed
        if self.verbose:
            print(
                f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint",
                flush=True,
            )


class Clock:
    """Training time per step, with evaluation, checkpoint and sample time left out."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.paused_s = 0.0
        self.steps = 0
        self.train_s = 0.0  # for the mean tokens/s of the summary
        self.train_steps = 0

    def tick(self) -> None:
        self.steps += 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - t0

    def lap_ms(self) -> float:
        """Mean ms per step since the last lap."""
        now = time.perf_counter()
        busy = now - self.last - self.paused_s
        ms = 1000.0 * busy / max(1, self.steps)
        self.train_s += busy
        self.train_steps += self.steps
        self.last, self.paused_s, self.steps = now, 0.0, 0
        return ms


def train_step(run: Run, stop: StopSignal | None = None) -> tuple[float, float, float]:
    """One optimizer step over grad_accum micro-batches. Returns (loss, grad norm, lr); a
    non-finite loss leaves weights and optimizer untouched. Agrees `stop.requested` over ranks."""
    c, d, opt = run.cfg.train, run.dist, run.optimizer
    scale = lr_scale(run.step, c)  # one schedule for every group, each from its own peak
    for group in opt.param_groups:
        group["lr"] = group["peak_lr"] * scale
    lr = c.lr * scale
    total = torch.zeros((), device=d.device)
    for micro in range(c.grad_accum):
        first = run.samples_seen + (micro * d.world_size + d.rank) * c.batch_size
        x, y = run.batches.train_batch(first, c.batch_size)
        # gradients are all-reduced only on the last micro-batch of a step
        with grad_sync(run.step_model, d, sync=micro == c.grad_accum - 1), run.autocast():
            _, loss = run.step_model(x, y)
            loss = loss / c.grad_accum
        run.scaler.scale(loss).backward()
        total += loss.detach()
    run.scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip or math.inf)
    if hasattr(norm, "full_tensor"):  # FSDP: a DTensor, already the norm over all shards
        norm = norm.full_tensor()
    flag = torch.tensor(float(stop is not None and stop.pending), device=total.device)
    loss_val, norm_val, stopping = all_reduce_mean(
        torch.stack([total, norm.to(total), flag]), d
    ).tolist()
    if stop is not None and stopping > 0:
        stop.requested = True
    if math.isfinite(loss_val):
        run.scaler.step(opt)  # with fp16 the scaler itself skips steps whose gradients overflowed
        run.scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss_val, norm_val, lr


@torch.no_grad()
def evaluate(run: Run) -> bool:
    """Mean loss on the fixed train and val batches; logs the eval row. True when val improved."""
    c, d = run.cfg.train, run.dist
    run.model.eval()
    means = {}
    for split in ("train", "val"):
        if split not in run.eval_cache:
            fixed = run.batches.fixed_batches(split, c.eval_iters, c.batch_size)
            run.eval_cache[split] = fixed[d.rank :: d.world_size]  # each rank its share
            run.eval_cache[split + "/pad"] = fixed[:1]
        losses = torch.zeros(2, device=d.device)
        share, pad = run.eval_cache[split], run.eval_cache[split + "/pad"][0]
        # FSDP gathers weights inside every forward, so all ranks must make as many calls:
        # a rank with one batch fewer repeats its first one and leaves it out of the mean
        calls = -(-c.eval_iters // d.world_size) if d.fsdp else len(share)
        for i in range(calls):
            x, y = share[i] if i < len(share) else pad
            with run.autocast():
                loss = run.model(x, y)[1].float()
            if i < len(share):
                losses += torch.stack([loss, torch.ones_like(loss)])
        losses = all_reduce_mean(losses, d)
        means[split] = (losses[0] / losses[1].clamp(min=1)).item()
    run.model.train()
    val = means["val"]
    row = {
        "eval/train_loss": means["train"],
        "eval/val_loss": val,
        "eval/val_ppl": math.exp(min(val, 50.0)),
        "eval/iter": run.step,
    }
    run.log(
        f"eval {run.step}: train loss {means['train']:.4f}, val loss {val:.4f}, val ppl {row['eval/val_ppl']:.1f}"
    )
    _record(run, row)
    run.history.update(
        first_val_loss=run.history.get("first_val_loss", val),
        final_val_loss=val,
        final_eval_train_loss=means["train"],
    )
    improved = val < run.best_val
    run.best_val = min(run.best_val, val)
    return improved and run.step > 0


def _record(run: Run, row: dict) -> None:
    run.tracker.log(row, run.step)
    if run.monitor is not None:
        run.monitor.observe(row, run.step)


def log_train(run: Run, loss: float, grad_norm: float, lr: float, clock: Clock) -> None:
    c, d = run.cfg.train, run.dist
    dt = clock.lap_ms()
    tps = run.tokens_per_step / (dt / 1000.0)
    row = {
        "train/loss": loss,
        "train/lr": lr,
        "train/iter": run.step,
        "train/dt_ms": dt,
        "train/steps_per_sec": 1000.0 / dt,
        "train/tokens_per_sec": tps,
        "train/tokens_per_sec_per_gpu": tps / d.world_size,
        "train/samples_per_sec": run.samples_per_step / (dt / 1000.0),
        "train/tokens_seen": run.samples_seen * run.cfg.model.block_size,
        "train/epoch": run.batches.epoch_of(run.samples_seen),
        "train/grad_norm": grad_norm,
    }
    flops = run.flops_per_token * tps  # achieved by all devices together
    row["train/tflops"], row["train/tflops_per_gpu"] = flops / 1e12, flops / 1e12 / d.world_size
    mfu = mfu_percent(run.flops_per_token, tps, d.world_size, run.peak_flops)
    if mfu is not None:  # per device; over all devices it is the same ratio
        row["train/mfu"] = mfu
    row.update(gpu_metrics(d.device))
    _record(run, row)
    run.history.update(final_train_loss=loss)
    eta = (c.max_iters - run.step) * dt / 1000.0
    mfu = f", mfu {row['train/mfu']:.1f}%" if "train/mfu" in row else ""
    per_gpu = f" ({tps / d.world_size:,.0f} per process)" if d.enabled else ""
    run.log(
        f"iter {run.step}/{c.max_iters}: loss {loss:.4f}, lr {lr:.2e}, {dt:.0f} ms, "
        f"{tps:,.0f} tok/s{per_gpu}{mfu}, eta {_duration(eta)}"
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def save(run: Run, is_best: bool = False) -> None:
    state = {
        "samples_seen": run.samples_seen,
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        "config": scrub(run.cfg.to_dict()),
        "tokenizer_fingerprint": run.meta.get("tokenizer_fingerprint"),
        "tracker_run_id": getattr(run.tracker, "run_id", None),
        "scaler": run.scaler.state_dict(),
        "world_size": run.dist.world_size,
        "saved_at": time.time(),
    }
    rng = gather_object(checkpoint.local_rng(run.dist.device), run.dist)  # every rank's generators
    if run.dist.fsdp:  # every rank sends its shards; rank 0 receives the whole state
        from hellolondon.train.fsdp import full_state

        weights, optim = full_state(run.model, run.optimizer)
    elif run.dist.is_main:
        weights, optim = run.model.state_dict(), run.optimizer.state_dict()
    if run.dist.is_main:
        path = checkpoint.save(
            run.run_dir / "checkpoints",
            run.step,
            weights,
            optim,
            state,
            run.cfg.train.keep_last,
            is_best,
            rng=checkpoint.rng_tensors(rng),
        )
        run.log(f"saved checkpoint {path}" + (" (best so far)" if is_best else ""))
        if run.cfg.tracking.log_artifacts and hasattr(run.tracker, "log_checkpoint"):
            run.tracker.log_checkpoint(path, ["latest", "best"] if is_best else ["latest"])
    barrier(run.dist)


def handle_nonfinite(run: Run, loss: float) -> str:
    policy = run.cfg.train.nonfinite
    if run.monitor is not None:
        run.monitor.nonfinite(run.step, policy)
    else:
        run.tracker.alert(
            "non-finite loss", f"loss {loss} at iteration {run.step}; policy {policy}", "ERROR"
        )
    if policy == "stop":
        save(run)  # weights and optimizer are still those from before the bad step
    return policy


def maybe_sample(run: Run, force: bool = False) -> None:
    every = run.cfg.train.sample_interval
    # with FSDP no rank holds the whole model; sample from a checkpoint with `generate`
    if not run.dist.is_main or run.dist.fsdp or not (force or (every and run.step % every == 0)):
        return
    from hellolondon.generate import sample_text

    tok_dir = run.run_dir / "tokenizer"
    if not tok_dir.is_dir():
        return
    text = sample_text(
        run.model, tok_dir, prompt="It was in London, in the year", max_new_tokens=64
    )
    with open(run.run_dir / "samples.txt", "a", encoding="utf-8") as f:
        f.write(f"=== iteration {run.step}\n{text}\n\n")


def finish(run: Run, clock: Clock, stopped: bool) -> dict:
    c = run.cfg.train
    if c.eval_interval and run.step % c.eval_interval != 0 and not stopped and evaluate(run):
        save(run, is_best=True)
    last = checkpoint.step_dirs(run.run_dir / "checkpoints")
    # rank 0's disk decides: other nodes may not see the run folder, and all ranks must save
    if broadcast_object(not last or last[0].name != f"step-{run.step:06d}", run.dist):
        save(run)
    maybe_sample(run, force=True)
    summary = {
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        **run.history,
        "iterations": run.step,
        "tokens_seen": run.samples_seen * run.cfg.model.block_size,
        "wall_time_s": round(time.perf_counter() - clock.start, 2),
        "mean_tokens_per_sec": clock.train_steps * run.tokens_per_step / clock.train_s
        if clock.train_s
        else None,
        "stopped_early": stopped,
    }
    run.tracker.summary(summary)
    run.tracker.finish()
    run.step_model = run.model  # let the DDP wrapper go before its process group (see shutdown)
    shutdown(run.dist)
    return summary
