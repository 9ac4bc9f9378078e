"""What the training loop calls: one optimizer step, evaluation, logging, checkpoints, samples."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

import torch

from hellolondon.errors import UserError
from hellolondon.hardware import gpu_metrics, mfu_percent
from hellolondon.progress import progress_bar
from hellolondon.step_profile import optimizer_range
from hellolondon.train import checkpoint
from hellolondon.train.distributed import (
    all_reduce_mean,
    broadcast_object,
    grad_sync,
    shutdown,
)
from hellolondon.train.optim import lr_scale
from hellolondon.train.run import Run
from hellolondon.train.signals import StopSignal
from hellolondon.train.speed import (
    StepResult,
    cuda_graph_warning,
    micro_batches,
    skips_on_device,
    step_unless,
)
from hellolondon.units import fmt_duration, fmt_value, perplexity


class Clock:
    """Training time per step, with evaluation, checkpoint and sample time left out; the timed
    time and tokens add up in the run's state, for the mean tokens/s of the whole run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last = time.perf_counter()
        self.paused_s = 0.0
        self.steps = 0
        self.first_s = 0.0  # the first step's time, until a lap has accounted for it
        self.steady_ms = 0.0  # the last lap's ms per step, without the first step

    def tick(self) -> None:
        self.steps += 1

    def first_step(self) -> None:
        """Note and say how long the first step of this start took, compilation included."""
        busy = time.perf_counter() - self.last - self.paused_s
        self.run.state.first_step_s = round(busy, 2)
        self.first_s = busy  # left out of the next lap's steady rate (the ETA)
        compiled = self.run.cfg.train.compiles(self.run.dist.device.type)
        took = f"{busy:.1f} s" if busy >= 1 else f"{busy * 1000:.0f} ms"  # not "0.0 s"
        self.run.log(f"first step took {took}" + (" (compilation included)" * compiled))
        if warning := cuda_graph_warning(self.run.cfg, self.run.dist.device):
            self.run.log(f"warning: {warning}")

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
        # the rate without the first step (compilation), when this lap holds more than it
        first, self.first_s = self.first_s, 0.0
        self.steady_ms = (
            1000.0 * (busy - first) / (self.steps - 1) if first and self.steps > 1 else ms
        )
        self.run.state.train_seconds += busy
        self.run.state.train_tokens += self.steps * self.run.tokens_per_step
        self.last, self.paused_s, self.steps = now, 0.0, 0
        return ms


def train_step(run: Run, stop: StopSignal | None = None) -> StepResult:
    """One optimizer step over the step's micro-batches. A non-finite loss or grad norm leaves
    weights and optimizer untouched. Returns the loss, grad norm and stop flag averaged over
    ranks as one device tensor, read later in one go (`speed.Readback`): with fused AdamW the
    skip is decided on the device and no step waits for the GPU; otherwise, and always under
    `train.nonfinite=stop` (whose checkpoint must hold the weights from before the bad step,
    not those of the steps after it), the step reads one flag (`skipped` is then known at
    once). Another rank's stop signal reaches this one at the read."""
    c, d, opt = run.cfg.train, run.dist, run.optimizer
    scale = lr_scale(run.state.step, c)  # one schedule for every group, each from its own peak
    for group in opt.param_groups:
        group["lr"] = group["peak_lr"] * scale
    lr = c.lr * scale
    # micro-batches of `size` sequences, `count` per step: batch_size x grad_accum unless
    # train.micro_batch regroups the same samples (speed.micro_plan)
    size, count = micro_batches(run.model, c)
    ahead = getattr(run.batches, "train_batch_ahead", None) if c.prefetch else None
    total = torch.zeros((), device=d.device)
    for micro in range(count):
        first = run.state.samples_seen + (micro * d.world_size + d.rank) * size
        if ahead is not None:
            # meanwhile read the next micro-batch; after the last, the next step's first one
            x, y = ahead(first, size, first + d.world_size * size)
        else:
            x, y = run.batches.train_batch(first, size)
        # gradients are all-reduced only on the last micro-batch of a step
        with grad_sync(run.step_model, d, sync=micro == count - 1), run.autocast():
            _, loss = run.step_model(x, y)
            loss = loss / count
        run.scaler.scale(loss).backward()
        total += loss.detach()
    with optimizer_range():  # a profile files what runs in here under "optimizer"
        values, skipped = _update(run, total, stop)
    return StepResult(values, lr, skipped)


def _update(
    run: Run, total: torch.Tensor, stop: StopSignal | None
) -> tuple[torch.Tensor, bool | None]:
    """Unscale and clip the gradients and step the optimizer, unless the loss or the norm is
    not finite. Returns (loss, grad norm, stop flag) averaged over ranks, and whether the step
    was skipped (None: decided on the device, known at the read)."""
    c, d, opt = run.cfg.train, run.dist, run.optimizer
    run.scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.grad_clip or math.inf)
    if hasattr(norm, "full_tensor"):  # FSDP: a DTensor, already the norm over all shards
        norm = norm.full_tensor()
    flag = total.new_full((), float(stop is not None and stop.pending))
    values = all_reduce_mean(torch.stack([total, norm.to(total), flag]), d)
    skipped: bool | None
    if not reads_every_step(run):
        step_unless(opt, ~torch.isfinite(values[:2]).all())
        skipped = None
    else:
        # fp16's scaler skips and rescales on overflowing gradients by itself: only the loss
        finite = torch.isfinite(values[0] if run.scaler.is_enabled() else values[:2]).all()
        # one host read: whether to step, and the ranks' stop flag (all ranks stop after it)
        ok, stopping = torch.stack([finite.to(values), values[2]]).tolist()
        skipped = not ok
        if stop is not None and stopping > 0:
            stop.requested = True
        if not skipped:
            run.scaler.step(opt)
        # after a skip too: it ends this step's `unscale_` (the next one would fail) and
        # lowers fp16's loss scale where the gradients overflowed
        run.scaler.update()
    opt.zero_grad(set_to_none=True)
    return values, skipped


def agree_on_stop(run: Run) -> None:
    """With several processes a signal that came while the loop evaluated, saved or sampled
    has reached one rank only (`stop.pending`): agree on it now, so that every rank stops after
    this step instead of training on to the next read of the step results."""
    stop = run.stop
    if stop.distributed and not stop.requested:  # the same on every rank: all join
        flag = torch.tensor(float(stop.pending), device=run.dist.device)
        stop.requested = all_reduce_mean(flag, run.dist).item() > 0


def reads_every_step(run: Run) -> bool:
    """Whether each step reads its results on the host (to decide a skip there), and with them
    the ranks' stop flag; otherwise they are read only when the loop logs, evaluates, saves or
    samples."""
    c = run.cfg.train
    on_device = skips_on_device(run.optimizer, run.scaler) and c.nonfinite == "skip"
    return not on_device or run.dist.fsdp


@torch.no_grad()
def evaluate(run: Run) -> bool:
    """Mean loss on the run's fixed train and val sequences; logs the eval row. True when val
    improved. The sequences are fixed for the run (`train.eval_seqs`): a resume on another
    world size or batch split evaluates the same ones."""
    run.model.eval()
    try:
        means = {split: _eval_split(run, split) for split in ("train", "val")}
    except _Stopped:
        run.state.eval_pending = True  # in the checkpoint the stop writes: a resume runs it
        run.log("evaluation left unfinished: a stop was asked for; a resume runs it first")
        return False
    finally:
        run.model.train()
    run.state.eval_pending = False
    val, step = means["val"], run.state.step
    row = {
        "eval/train_loss": means["train"],
        "eval/val_loss": val,
        "eval/val_ppl": perplexity(val),
        "eval/iter": step,
    }
    run.log(
        f"eval {step}: train loss {means['train']:.4f}, val loss {val:.4f}, val ppl {fmt_value(row['eval/val_ppl'], 1)}"
    )
    _record(run, row)
    return run.state.record_eval(val, means["train"])


def _eval_batches(run: Run, split: str) -> tuple[list, tuple]:
    """This rank's share of the split's fixed sequences in micro-batches, and a batch to run
    where FSDP needs more calls than the share has (the first sequence of all, when this
    rank's share is empty); loaded once for the run. A micro-batch holds as many sequences as
    a training forward (`train.micro_batch`), which the memory was checked for."""
    c, d = run.cfg.train, run.dist
    if split not in run.eval_cache:
        every = run.batches.fixed_batches(split, c.eval_seqs, 1)
        seqs = every[d.rank :: d.world_size]
        size = micro_batches(run.model, c)[0]
        batches = [
            tuple(torch.cat(part) for part in zip(*seqs[i : i + size], strict=True))
            for i in range(0, len(seqs), size)
        ]
        run.eval_cache[split] = batches, batches[0] if batches else every[0]
    return run.eval_cache[split]


def _eval_split(run: Run, split: str) -> float:
    c, d = run.cfg.train, run.dist
    batches, filler = _eval_batches(run, split)
    # FSDP gathers weights inside every forward, so all ranks must make as many calls: a rank
    # with fewer batches runs `filler` and leaves it out of the sums
    share = -(-c.eval_seqs // d.world_size)
    calls = -(-share // micro_batches(run.model, c)[0]) if d.fsdp else len(batches)
    sums = torch.zeros(2, device=d.device)  # loss summed over sequences, sequences
    for i in progress_bar(range(calls), desc=f"eval {split}", leave=False, disable=not run.slow):
        if run.stop is not None and run.stop.pending and not d.enabled:
            raise _Stopped  # one process: nothing to agree on, so a long evaluation gives way
        x, y = batches[i] if i < len(batches) else filler
        with run.autocast():
            loss = run.model(x, y)[1].float()
        if i < len(batches):
            sums += torch.stack([loss * len(x), torch.tensor(float(len(x)), device=d.device)])
    sums = all_reduce_mean(sums, d)  # the ratio of the means is the ratio of the sums
    return (sums[0] / sums[1].clamp(min=1)).item()


class _Stopped(Exception):
    """A stop signal arrived during an evaluation."""


def _record(run: Run, row: dict) -> None:
    run.tracker.log(row, run.state.step)
    if run.monitor is not None:
        run.monitor.observe(row, run.state.step)


def log_train(run: Run, loss: float, grad_norm: float, lr: float, clock: Clock) -> None:
    c, d, st = run.cfg.train, run.dist, run.state
    dt = clock.lap_ms()
    tps = run.tokens_per_step / (dt / 1000.0)
    sps = run.samples_per_step / (dt / 1000.0)
    row = {
        "train/loss": loss,
        "train/lr": lr,
        "train/iter": st.step,
        "train/dt_ms": dt,
        "train/steps_per_sec": 1000.0 / dt,
        "train/tokens_per_sec": tps,
        "train/tokens_per_sec_per_gpu": tps / d.world_size,
        "train/samples_per_sec": sps,
        "train/tokens_seen": st.samples_seen * run.cfg.model.block_size,
        "train/epoch": run.batches.epoch_of(st.samples_seen),
        "train/epoch_time_s": run.batches.n_windows / sps,  # one pass over train.bin, at this rate
        "train/grad_norm": grad_norm,
    }
    flops = run.flops_per_token * tps  # achieved by all devices together
    row["train/tflops"], row["train/tflops_per_gpu"] = flops / 1e12, flops / 1e12 / d.world_size
    mfu = mfu_percent(run.flops_per_token, tps, d.world_size, run.peak_flops)
    if mfu is not None:  # per device; over all devices it is the same ratio
        row["train/mfu"] = mfu
    row.update(gpu_metrics(d.device))
    _record(run, row)
    st.final_train_loss = loss
    eta = (c.max_iters - st.step) * clock.steady_ms / 1000.0
    mfu = f", mfu {row['train/mfu']:.1f}%" if "train/mfu" in row else ""
    per_gpu = f" ({tps / d.world_size:,.0f} per process)" if d.world_size > 1 else ""
    run.log(
        f"iter {st.step}/{c.max_iters}: loss {loss:.4f}, lr {lr:.2e}, {dt:.0f} ms, "
        f"{tps:,.0f} tok/s{per_gpu}{mfu}, eta {fmt_duration(eta)}"
    )


def save(run: Run, is_best: bool = False) -> None:
    c = run.cfg.train
    info = run.checkpoint_info()
    path = checkpoint.save_run(
        run.rundir.checkpoints, run.parts(), run.dist, info, c.keep_last, is_best
    )
    if path is not None:
        run.log(f"saved checkpoint {path}" + (" (best so far)" if is_best else ""))
        if run.cfg.tracking.log_artifacts:
            run.tracker.log_checkpoint(path, ["latest", "best"] if is_best else ["latest"])


def nonfinite_what(loss: float, grad_norm: float) -> str:
    """Which of a skipped step's two values was not finite, e.g. "gradient norm nan (loss 197.8)"."""
    if not math.isfinite(loss):
        return f"loss {loss}"
    return f"gradient norm {grad_norm} (loss {loss:.4g})"


def handle_nonfinite(run: Run, iteration: int, loss: float, grad_norm: float) -> str:
    """Iteration `iteration` (as `train/iter` counts) had a non-finite loss or gradient norm
    and was not applied: report it and apply the policy (skip or stop)."""
    policy, what = run.cfg.train.nonfinite, nonfinite_what(loss, grad_norm)
    if run.monitor is not None:
        run.monitor.nonfinite(iteration, policy, what)
    else:
        text = f"{what} at iteration {iteration}; policy {policy}"
        run.tracker.alert("non-finite loss", text, "ERROR", step=iteration, rule="nonfinite")
    if policy == "stop":
        run.state.stop_reason = "non-finite loss"
        save(run)  # weights and optimizer are still those from before the bad step
    return policy


def report_skipped(run: Run, rows: list) -> None:
    """Report the steps the device skipped (fused AdamW or Muon under `train.nonfinite=skip`)
    once their losses are read. Steps read at once were reported when they ran."""
    for row in rows:
        if row.skipped and not row.known_at_once:
            what = nonfinite_what(row.loss, row.grad_norm)
            run.log(f"iteration {row.step + 1}: non-finite {what}; the step was skipped")
            handle_nonfinite(run, row.step + 1, row.loss, row.grad_norm)


def sample_due(run: Run) -> bool:
    every = run.cfg.train.sample_interval
    return bool(every) and run.state.step % every == 0


def maybe_sample(run: Run, force: bool = False) -> None:
    # with FSDP no rank holds the whole model; sample from a checkpoint with `generate`
    if not run.dist.is_main or run.dist.fsdp or not (force or sample_due(run)):
        return
    step = run.state.step
    from hellolondon.generate import sample_text

    if not run.rundir.tokenizer_dir.is_dir():
        return
    try:
        text = sample_text(
            run.model,
            run.rundir.tokenizer_dir,
            prompt="It was in London, in the year",
            max_new_tokens=64,
        )
    except UserError as exc:  # weights that diverged: the run's own findings say more
        run.log(f"warning: no sample at iteration {step}: {exc}")
        text = f"(no sample: {exc})"
    run.rundir.append_sample(step, text)


def finish(run: Run, stopped: bool) -> dict:
    c, st = run.cfg.train, run.state
    if stopped and not st.stop_reason:
        st.stop_reason = "stopped by a signal"
    # the last step's evaluation, unless done: by the loop, or before a resume that trained nothing
    if c.eval_interval and st.last_eval_step != st.step and not stopped and evaluate(run):
        save(run, is_best=True)
    last = checkpoint.step_dirs(run.rundir.checkpoints)
    # rank 0's disk decides: other nodes may not see the run folder, and all ranks must save
    if broadcast_object(not last or last[0].name != checkpoint.step_folder_name(st.step), run.dist):
        save(run)
    maybe_sample(run, force=True)
    summary = st.summary() | {"tokens_seen": st.samples_seen * run.cfg.model.block_size}
    summary |= dict.fromkeys(run.cleared)  # an abandoned line's evaluation: cleared in W&B too
    run.tracker.summary(summary)
    run.tracker.finish()
    if run.dist.is_main:
        run.rundir.mark_ended()
    run.step_model = run.model  # let the DDP wrapper go before its process group (see shutdown)
    shutdown(run.dist)
    return summary | {"run_dir": str(run.rundir.path)}
