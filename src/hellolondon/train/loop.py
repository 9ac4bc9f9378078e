"""The training loop. One screen: step, maybe log, maybe evaluate, maybe save; the helpers it
calls live in `train/steps.py` (a failure's report in `train/failure.py`)."""

from __future__ import annotations

from hellolondon.config import RunConfig
from hellolondon.provenance import HashInBackground
from hellolondon.train.distributed import launched_in_group, launched_rank
from hellolondon.train.failure import failure_reported
from hellolondon.train.run import Run, setup_run
from hellolondon.train.signals import StopSignal
from hellolondon.train.speed import Readback
from hellolondon.train.steps import (
    Clock,
    agree_on_stop,
    evaluate,
    finish,
    handle_nonfinite,
    log_train,
    maybe_sample,
    reads_every_step,
    report_skipped,
    sample_due,
    save,
    train_step,
)


def train(
    cfg: RunConfig,
    resume: str | None = None,
    log=print,
    global_batch: int | None = None,
    hashing: HashInBackground | None = None,
) -> dict:
    """Train until `max_iters` or a stop signal; returns the run summary. A stop signal is
    heeded from the start: one that comes while the run is set up (W&B alone may take 15 s)
    ends it before its first step, with a checkpoint to resume from. `hashing`: the token
    files' hash a command started already (see `setup_run`)."""
    stop = StopSignal(launched_in_group(), verbose=launched_rank() == 0)
    try:
        run = setup_run(cfg, resume, log, global_batch, hashing)
        run.stop = stop
        with failure_reported(run):
            return _train(run)
    finally:
        stop.restore()


def _train(run: Run) -> dict:
    c, st, stop = run.cfg.train, run.state, run.stop
    clock, results = Clock(run), Readback()
    stop.training(1 if reads_every_step(run) else c.log_interval)
    if (st.step == 0 or st.eval_pending) and c.eval_interval:
        # the untrained loss (where the curves start), or the evaluation a stop cut short
        with clock.paused():
            if evaluate(run):
                save(run, is_best=True)
    first = st.step + 1
    while st.step < c.max_iters and not stop.requested:
        out = train_step(run, stop)  # results stay on the device until `results.read`
        if out.skipped:  # known at once: reported now
            loss, norm = out.values[:2].tolist()
            if handle_nonfinite(run, st.step + 1, loss, norm) == "stop":
                break  # checkpointed before the bad step
        results.add(st.step, out)
        st.step += 1
        st.samples_seen += run.samples_per_step
        clock.tick()
        log_now = st.step % c.log_interval == 0 or st.step == c.max_iters
        eval_now = bool(c.eval_interval) and st.step % c.eval_interval == 0
        save_now = bool(c.ckpt_interval) and st.step % c.ckpt_interval == 0
        if not (log_now or eval_now or save_now or sample_due(run) or st.step == first):
            continue  # no host read this step: the GPU runs ahead
        rows = results.read(stop)  # also agrees on a stop over ranks
        if st.step == first:
            clock.first_step()
        report_skipped(run, rows)  # steps the device skipped (train.nonfinite=skip)
        if log_now:
            log_train(run, rows[-1].loss, rows[-1].grad_norm, rows[-1].lr, clock)
        with clock.paused():  # eval, checkpoint and sample time stay out of dt_ms
            improved = evaluate(run) if eval_now else False
            if improved or save_now:
                save(run, is_best=improved)
            maybe_sample(run)
            agree_on_stop(run)  # a signal meanwhile: every rank stops after this step
    if not st.stop_reason:
        report_skipped(run, results.read(stop))
    return finish(run, stopped=stop.requested)
