"""The training loop. One screen: step, maybe log, maybe evaluate, maybe save; the helpers it
calls live in `train/steps.py`."""

from __future__ import annotations

import math

from hellolondon.config import RunConfig
from hellolondon.train.run import setup_run
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


def train(
    cfg: RunConfig, resume: str | None = None, log=print, global_batch: int | None = None
) -> dict:
    """Train until `max_iters` or a stop signal; returns the run summary."""
    run = setup_run(cfg, resume, log, global_batch)
    c, st = run.cfg.train, run.state
    stop, clock = StopSignal(run.dist.enabled, verbose=run.dist.is_main), Clock(run)
    if st.step == 0 and c.eval_interval:
        with clock.paused():
            evaluate(run)  # the untrained loss: where the curves start
    while st.step < c.max_iters and not stop.requested:
        loss, grad_norm, lr = train_step(run, stop)  # also agrees on a stop over ranks
        if not math.isfinite(loss) and handle_nonfinite(run, loss) == "stop":
            break  # checkpointed before the bad step; a finite step was applied otherwise
        st.step += 1
        st.samples_seen += run.samples_per_step
        clock.tick()
        if st.step % c.log_interval == 0 or st.step == c.max_iters:
            log_train(run, loss, grad_norm, lr, clock)
        with clock.paused():  # eval, checkpoint and sample time stay out of dt_ms
            improved = (
                evaluate(run) if c.eval_interval and st.step % c.eval_interval == 0 else False
            )
            if improved or (c.ckpt_interval and st.step % c.ckpt_interval == 0):
                save(run, is_best=improved)
            maybe_sample(run)
    return finish(run, stopped=stop.requested)
