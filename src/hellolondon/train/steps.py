"""What the training loop calls: one optimizer step, evaluation, logging, checkpoints, samples."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator

import torch

from hellolondon.tracking.hardware import gpu_metrics
from hellolondon.tracking.secrets import scrub
from hellolondon.train import checkpoint
from hellolondon.train.distributed import all_reduce_mean, barrier
from hellolondon.train.optim import lr_at
from hellolondon.train.run import Run


class StopSignal:
    """SIGTERM (a scheduler's notice before pre-emption) or a first Ctrl-C asks the loop to
    stop after the current step, write a checkpoint and flush tracking; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint", flush=True)


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


def train_step(run: Run) -> tuple[float, float, float]:
    """One optimizer step over grad_accum micro-batches. Returns (loss, grad norm, lr); a
    non-finite loss leaves weights and optimizer untouched."""
    c, d, opt = run.cfg.train, run.dist, run.optimizer
    lr = lr_at(run.step, c)
    for group in opt.param_groups:
        group["lr"] = lr
    total = torch.zeros((), device=d.device)
    for micro in range(c.grad_accum):
        first = run.samples_seen + (micro * d.world_size + d.rank) * c.batch_size
        x, y = run.batches.train_batch(first, c.batch_size)
        last = micro == c.grad_accum - 1
        # DDP all-reduces gradients only on the last micro-batch of a step
        sync = contextlib.nullcontext() if last or not d.enabled else run.step_model.no_sync()
        with sync, run.autocast():
            _, loss = run.step_model(x, y)
            loss = loss / c.grad_accum
        run.scaler.scale(loss).backward()
        total += loss.detach()
    run.scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip or math.inf)
    loss_val, norm_val = all_reduce_mean(torch.stack([total, norm.to(total)]), d).tolist()
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
        losses = torch.zeros(2, device=d.device)
        for x, y in run.eval_cache[split]:
            with run.autocast():
                losses[0] += run.model(x, y)[1].float()
            losses[1] += 1
        losses = all_reduce_mean(losses, d)
        means[split] = (losses[0] / losses[1].clamp(min=1)).item()
    run.model.train()
    val = means["val"]
    row = {
        "eval/train_loss": means["train"], "eval/val_loss": val,
        "eval/val_ppl": math.exp(min(val, 50.0)), "eval/iter": run.step,
    }
    run.log(f"eval {run.step}: train loss {means['train']:.4f}, val loss {val:.4f}, val ppl {row['eval/val_ppl']:.1f}")
    _record(run, row)
    run.history.update(first_val_loss=run.history.get("first_val_loss", val), final_val_loss=val,
                       final_eval_train_loss=means["train"])
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
        "train/loss": loss, "train/lr": lr, "train/iter": run.step, "train/dt_ms": dt,
        "train/tokens_per_sec": tps, "train/tokens_per_sec_per_gpu": tps / d.world_size,
        "train/samples_per_sec": run.samples_per_step / (dt / 1000.0),
        "train/tokens_seen": run.samples_seen * run.cfg.model.block_size,
        "train/epoch": run.batches.epoch_of(run.samples_seen), "train/grad_norm": grad_norm,
    }
    if run.peak_flops:
        # MFU per device: the FLOPs one device does per second over its peak, in percent
        row["train/mfu"] = 100.0 * run.model.flops_per_token() * tps / d.world_size / run.peak_flops
    row.update(gpu_metrics(d.device))
    _record(run, row)
    run.history.update(final_train_loss=loss)
    eta = (c.max_iters - run.step) * dt / 1000.0
    mfu = f", mfu {row['train/mfu']:.1f}%" if "train/mfu" in row else ""
    run.log(f"iter {run.step}/{c.max_iters}: loss {loss:.4f}, lr {lr:.2e}, {dt:.0f} ms, "
            f"{tps:,.0f} tok/s{mfu}, eta {_duration(eta)}")


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
    if run.dist.is_main:
        path = checkpoint.save(run.run_dir / "checkpoints", run.step, run.model.state_dict(),
                               run.optimizer.state_dict(), state, run.cfg.train.keep_last, is_best)
        run.log(f"saved checkpoint {path}" + (" (best so far)" if is_best else ""))
        if run.cfg.tracking.log_artifacts and hasattr(run.tracker, "log_checkpoint"):
            run.tracker.log_checkpoint(path, ["latest", "best"] if is_best else ["latest"])
    barrier(run.dist)


def handle_nonfinite(run: Run, loss: float) -> str:
    policy = run.cfg.train.nonfinite
    if run.monitor is not None:
        run.monitor.nonfinite(run.step, policy)
    else:
        run.tracker.alert("non-finite loss", f"loss {loss} at iteration {run.step}; policy {policy}", "ERROR")
    if policy == "stop":
        save(run)  # weights and optimizer are still those from before the bad step
    return policy


def maybe_sample(run: Run, force: bool = False) -> None:
    every = run.cfg.train.sample_interval
    if not run.dist.is_main or not (force or (every and run.step % every == 0)):
        return
    from hellolondon.generate import sample_text

    tok_dir = run.run_dir / "tokenizer"
    if not tok_dir.is_dir():
        return
    text = sample_text(run.model, tok_dir, prompt="It was in London, in the year", max_new_tokens=64)
    with open(run.run_dir / "samples.txt", "a", encoding="utf-8") as f:
        f.write(f"=== iteration {run.step}\n{text}\n\n")


def finish(run: Run, clock: Clock, stopped: bool) -> dict:
    c = run.cfg.train
    last = checkpoint.step_dirs(run.run_dir / "checkpoints")
    if c.eval_interval and run.step % c.eval_interval != 0 and not stopped:
        if evaluate(run):
            save(run, is_best=True)
    if not last or last[0].name != f"step-{run.step:06d}":
        save(run)
    maybe_sample(run, force=True)
    summary = {
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        **run.history,
        "iterations": run.step,
        "tokens_seen": run.samples_seen * run.cfg.model.block_size,
        "wall_time_s": round(time.perf_counter() - clock.start, 2),
        "mean_tokens_per_sec": clock.train_steps * run.tokens_per_step / clock.train_s if clock.train_s else None,
        "stopped_early": stopped,
    }
    run.tracker.summary(summary)
    run.tracker.finish()
    return summary
