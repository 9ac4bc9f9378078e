"""The training loop. One screen: step, maybe log, maybe evaluate, maybe save; the helpers it
calls live in `train/steps.py`."""

from __future__ import annotations

import time

from hellolondon.config import RunConfig
from hellolondon.train.run import setup_run
from hellolondon.train.speed import Readback
from hellolondon.train.steps import (
    Clock,
    StopSignal,
    evaluate,
    finish,
    handle_nonfinite,
    log_train,
    maybe_sample,
    save,
    train_step,
)


def train(cfg: RunConfig, resume: str | None = None, log=print) -> dict:
    """Train until `max_iters` or a stop signal; returns the run summary."""
    run = setup_run(cfg, resume, log)
    c = run.cfg.train
    stop, clock = StopSignal(run.dist.enabled, verbose=run.dist.is_main), Clock()
    if run.step == 0 and c.eval_interval:
        evaluate(run)  # the untrained loss: where the curves start
    results, first, t0 = Readback(), run.step + 1, time.perf_counter()
    stopped_on_nan = False
    while run.step < c.max_iters and not stop.requested:
        out = train_step(run, stop)  # results stay on the device until `results.read`
        if out.skipped and handle_nonfinite(run, out.values[0].item()) == "stop":
            break  # checkpointed before the bad step; a finite step was applied otherwise
        run.step += 1
        run.samples_seen += run.samples_per_step
        clock.tick()
        results.add(run.step - 1, out)
        log_now = run.step % c.log_interval == 0 or run.step == c.max_iters
        eval_now = bool(c.eval_interval) and run.step % c.eval_interval == 0
        save_now = bool(c.ckpt_interval) and run.step % c.ckpt_interval == 0
        sample_now = bool(c.sample_interval) and run.step % c.sample_interval == 0
        if not (log_now or eval_now or save_now or sample_now or run.step == first):
            continue  # no host read this step: the GPU runs ahead
        rows = results.read(stop)  # also agrees on a stop over ranks
        if run.step == first:
            run.history["first_step_s"] = round(time.perf_counter() - t0, 2)
            run.log(f"first step took {run.history['first_step_s']:.1f} s (compilation included)")
        if _late_nonfinite(run, rows):
            stopped_on_nan = True
            break  # the bad steps were skipped on the device; the checkpoint has this step
        if log_now:
            log_train(run, rows[-1].loss, rows[-1].grad_norm, rows[-1].lr, clock)
        with clock.paused():  # eval, checkpoint and sample time stay out of dt_ms
            improved = evaluate(run) if eval_now else False
            if improved or save_now:
                save(run, is_best=improved)
            maybe_sample(run)
    if not stopped_on_nan:
        _late_nonfinite(run, results.read(stop))
    return finish(run, clock, stopped=stop.requested)


def _late_nonfinite(run, rows) -> bool:
    """Report steps the device skipped (fused AdamW) once their losses are read; True when the
    policy stops the run. Steps read at once were reported when they ran."""
    for row in rows:
        if row.skipped and not row.known_at_once:
            run.log(f"iteration {row.step}: non-finite loss {row.loss}; the step was skipped")
            if handle_nonfinite(run, row.loss) == "stop":
                return True
    return False
