"""The health monitor: watches the metric stream inside training for the W&B guide's red flags.

The loop hands every logged row to `observe(row, step)`. Each rule compares a running median of
the last few rows against a level it keeps (the best loss so far, the running MFU, the settled
step time), so one noisy row never raises an alarm. A finding is printed as one console line,
sent to the tracker as an alert (W&B applies its own wait between alerts of the same title) and
so appended to the run's events log. A rule that has fired stays quiet until its condition has been
clear for `rearm_rows` rows: a persisting problem is reported once, not on every row.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

from hellolondon.config import MonitorConfig


class Phase(NamedTuple):
    name: str
    start: int  # first step in the W&B guide's 60,000-step run
    end: int
    low: float  # the loss range the W&B guide expects by the end of the phase
    high: float


# The W&B guide's training phases, scaled to each run's max_iters, and what it expects in each.
SEED_ITERS = 60000
PHASES = (
    Phase("early", 0, 2000, 6.0, 7.0),
    Phase("mid", 2000, 20000, 4.0, 5.0),
    Phase("late", 20000, 60000, 2.0, 4.0),
)
# (loss, MFU, learning rate, step time) in each phase; the MFU part is left out where none is
# measured (a CPU), and the rate's follows the run's schedule: the guide's decays through the
# late phase, as cosine does; WSD holds its peak until the cool-down of the last steps
EXPECT = {
    "early": ("loss drops fast from 8-10 to 6-7", "MFU may start low and rise", "LR warms up",
              "step time settles after compilation"),
    "mid": ("loss falls steadily from 6-7 to 4-5", "MFU stable", "LR at its peak",
            "step time steady"),
    "late": ("loss falls slowly from 4-5 to 2-4", "MFU stays high", "LR decays",
             "step time steady"),
}  # fmt: skip
WSD_LATE_LR = "LR at its peak until the cool-down of the last steps, then decaying"


def expectation(phase: str, schedule: str, mfu: bool) -> str:
    """What the guide expects in `phase`, said for this run's schedule and device."""
    loss, mfu_text, lr, dt = EXPECT[phase]
    if phase == "late" and schedule == "wsd":
        lr = WSD_LATE_LR
    return "; ".join([loss, *([mfu_text] if mfu else []), lr, dt])


LATE_CHECK = 0.95  # the late phase's range is checked this far into the run
SPIKE_WINDOW = 50  # rows before a loss that give its spike baseline (median and spread)
PLATEAU_WINDOW = 50  # most rows in each median a plateau compares


@dataclass
class Finding:
    """One health finding: which rule, how serious (W&B alert levels), where, and what to do."""

    rule: str
    level: str  # INFO | WARN | ERROR
    step: int
    title: str
    text: str

    def line(self) -> str:
        return f"health: [{self.level}] {self.title} at iter {self.step}: {self.text}"


def _num(row: dict[str, Any], key: str) -> float | None:
    """A finite number from a row, or None (missing, text such as "nan", inf)."""
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def failure_finding(error: str, message: str) -> tuple[str, str]:
    """(title, text) for an error that ended training (its type's name and first line): out
    of memory says what to change."""
    first = message[:200]
    # by name and words, not class: torch's OutOfMemoryError, or an allocator's RuntimeError
    if error == "OutOfMemoryError" or "out of memory" in first.lower():
        return "out of memory", (
            f"{first}. Lower train.batch_size and raise train.grad_accum (the same global "
            "batch), or set train.micro_batch=auto or train.activation_checkpointing=true, then "
            "resume from the last checkpoint"
        )
    return "training failed", f"{error}: {first}; resume from the last checkpoint"


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class HealthMonitor:
    """Red-flag rules over the train and eval rows of one run (rank 0 only)."""

    def __init__(
        self,
        cfg: MonitorConfig,
        tracker: Any = None,
        max_iters: int = 0,
        console: Callable[[str], Any] | None = print,
        schedule: str = "cosine",
    ) -> None:
        self.cfg, self.tracker, self.max_iters, self.console = cfg, tracker, max_iters, console
        self.schedule = schedule  # the learning-rate schedule, for what the phases expect
        self.findings: list[Finding] = []
        self._new: list[Finding] = []  # the findings of the row being observed
        self._active: dict[str, bool] = {}
        self._clear: dict[str, int] = {}
        self._loss_steps: list[int] = []  # every finite train loss with its step
        self._losses: list[float] = []
        self._best_fast = self._best = math.inf  # lowest short and long running medians
        self._first_eval = math.inf  # the first evaluation's loss: the untrained model's
        self._lr_max, self._lr_peak_step = -math.inf, None
        self._rows = 0  # train rows seen
        self._mfu_level: float | None = None
        self._mfu: deque[float] = deque(maxlen=cfg.smooth_rows)
        self._dt: deque[float] = deque(maxlen=cfg.smooth_rows)
        self._dt_level = math.inf
        self._mem_prev: float | None = None
        self._mem_streak = 0
        self._evals: list[tuple[int, float, float]] = []  # (step, eval train loss, val loss)
        self._best_eval = 0  # index of the lowest val loss
        self._phase: str | None = None
        self._checked_ends: set[str] = set()
        self._nonfinite = 0

    # -- the loop's two entry points -------------------------------------------------------

    def observe(self, row: dict[str, Any], step: int) -> list[Finding]:
        """Check one logged row; returns the findings it raised (already printed and alerted)."""
        self._new = []
        if self.cfg.enabled:
            if "train/loss" in row:
                self._train_row(row, step)
            if _num(row, "eval/val_loss") is not None:
                self._eval_row(row, step)
        return self._new

    def nonfinite(self, step: int, policy: str, what: str = "loss NaN/inf") -> list[Finding]:
        """Iteration `step` had a non-finite value (`what`: "loss nan", "gradient norm inf
        (loss 3.2)") and the loop applied `policy` (skip or stop)."""
        self._new = []
        if policy == "stop":
            text = (
                f"{what}; the step was not applied, a checkpoint of the weights before it was "
                "written and training stops. Lower train.lr, check the data, or resume with "
                "train.nonfinite=skip"
            )
            self._fire("nonfinite", "ERROR", step, "non-finite loss", text)
            return self._new
        self._nonfinite += (
            1  # skipped steps only: a stopped step runs again on resume and counts then
        )
        n = self._nonfinite
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... occurrence: never a flood
            text = (
                f"{what}; the step was skipped, weights and optimizer untouched "
                f"({n} skipped so far). If this repeats, lower train.lr or check the data"
            )
            self._fire("nonfinite", "ERROR", step, "non-finite loss", text)
        return self._new

    def failed(self, step: int, error: str, message: str) -> list[Finding]:
        """Training stopped at `step` with an error (its type's name and first line)."""
        self._new = []
        self._fire("failure", "ERROR", step, *failure_finding(error, message))
        return self._new

    # -- rows ------------------------------------------------------------------------------

    def _train_row(self, row: dict[str, Any], step: int) -> None:
        self._rows += 1
        lr = _num(row, "train/lr")
        if lr is not None and lr > self._lr_max:
            self._lr_max, self._lr_peak_step = lr, step
        self._phase_rules(step, mfu="train/mfu" in row)
        loss = _num(row, "train/loss")  # a NaN row is the loop's to handle: see nonfinite()
        if loss is not None:
            self._spike(loss, step)
            self._loss_steps.append(step)
            self._losses.append(loss)
            self._loss_rules(step)
        if self._rows > self.cfg.skip_rows:  # compilation and warm-up rows say nothing yet
            self._mfu_rule(_num(row, "train/mfu"), step)
            self._dt_rule(_num(row, "train/dt_ms"), step)
            self._memory_rules(row, step)

    def _eval_row(self, row: dict[str, Any], step: int) -> None:
        """Overfitting: val loss stays well above its best while the train loss keeps falling."""
        val, train = _num(row, "eval/val_loss"), _num(row, "eval/train_loss")
        if not self._evals and not self._losses:  # before any train row: at iteration 0
            self._first_eval = val if train is None else train
        self._evals.append((step, math.nan if train is None else train, val))
        if val < self._evals[self._best_eval][2]:
            self._best_eval = len(self._evals) - 1
        c, n, b = self.cfg, self.cfg.overfit_evals, self._best_eval
        b_step, b_train, b_val = self._evals[b]
        now_train = self._evals[-1][1]
        cond = (
            len(self._evals) - 1 - b >= n
            and all(v > b_val * (1 + c.overfit_min_rise) for _, _, v in self._evals[-n:])
            and now_train < b_train  # False when there is no train loss (NaN)
        )
        if self._trips("overfit", cond):
            text = (
                f"val loss {val:.3f} has stayed {100 * (val / b_val - 1):.0f}% above its best "
                f"{b_val:.3f} (iter {b_step}) for {n} evaluations while train loss fell from "
                f"{b_train:.3f} to {now_train:.3f}: the model memorises its training text. The "
                f"`best` checkpoint keeps iter {b_step}; add data or dropout, or stop early"
            )
            self._fire("overfit", "WARN", step, "overfitting", text)

    # -- rules -----------------------------------------------------------------------------

    def _spike(self, loss: float, step: int) -> None:
        """One row far above the level of the rows just before it. The spread comes from
        row-to-row differences, which a falling trend does not inflate (a MAD would)."""
        recent = self._losses[-SPIKE_WINDOW:]
        cond = False
        if len(recent) >= 10:
            level = statistics.median(recent[-self.cfg.smooth_rows :])
            diffs = [abs(b - a) for a, b in pairwise(recent)]
            sigma = statistics.median(diffs) * 1.0484  # median |x1 - x2| of N(0, s) is 0.954 s
            cond = loss - level > max(self.cfg.spike_zscore * sigma, self.cfg.spike_min_rel * level)
        if self._trips("spike", cond):
            text = (
                f"loss {loss:.3f} against a recent level of {level:.3f}. One spike that recovers "
                "is harmless; repeated spikes mean the learning rate is too high or bad batches"
            )
            self._fire("spike", "WARN", step, "loss spike", text)

    def _loss_rules(self, step: int) -> None:
        c, losses = self.cfg, self._losses
        if len(losses) < c.smooth_rows:
            return
        now = statistics.median(losses[-c.smooth_rows :])  # fast: for divergence
        # the untrained model's loss counts too (the evaluation at iteration 0, else the first
        # row): a run that blows up within its first rows has no low median of its own
        self._best_fast = best = min(self._best_fast, now, losses[0], self._first_eval)
        if self._trips("diverging", now > best * c.diverge_ratio):
            text = (
                f"smoothed loss {now:.3f} is {now / best:.1f}x its best {best:.3f}: training is "
                "unstable. Lower train.lr or raise train.warmup_iters, and resume from a "
                f"checkpoint saved before iteration {step} (later ones hold the diverged "
                "weights), or start again where none was"
            )
            self._fire("diverging", "ERROR", step, "loss diverging", text)
        if len(losses) >= c.trend_rows:
            trend = statistics.median(losses[-c.trend_rows :])  # slow: for a steady rise
            self._best = low = min(self._best, trend)
            rising = trend > low * c.rise_ratio and not self._active.get("diverging")
            if self._trips("rising", rising):
                text = (
                    f"smoothed loss {trend:.3f} is {100 * (trend / low - 1):.0f}% above its best "
                    f"{low:.3f}: the learning rate may be too high or the model unstable"
                )
                self._fire("rising", "WARN", step, "loss rising", text)
        self._plateau(step)

    def _plateau(self, step: int) -> None:
        """No real drop over the latest half of the run so far, once the LR warm-up is over.
        The span grows with the run, since a healthy loss falls more slowly the longer it
        trains, and so do the medians compared (up to PLATEAU_WINDOW rows): noise cannot pass."""
        c, steps, losses = self.cfg, self._loss_steps, self._losses
        mid = (steps[0] + step) // 2
        i = bisect.bisect_right(steps, mid)  # rows [i:] lie in the latest half
        rows_in = len(steps) - i
        w = max(c.smooth_rows, min(rows_in // 2, PLATEAU_WINDOW))
        warming_up = self._lr_peak_step == step  # the loss may be waiting for the LR
        if warming_up or self._active.get("diverging") or rows_in < c.plateau_rows or i < w:
            return
        then, now = statistics.median(losses[i - w : i]), statistics.median(losses[-w:])
        if self._trips("plateau", (then - now) / then < c.plateau_min_drop, rearm=rows_in):
            start = statistics.median(losses[: c.smooth_rows])
            learned = now < start * (1 - c.plateau_learned_drop)
            # the guide expects the loss to flatten late in training, once it has come down
            expected = self._phase == "late" and learned
            if expected:
                advice = "late in training a flattening loss is expected"
            elif not learned:
                advice = (
                    f"it is still near its start ({start:.3f}): the model is not learning; "
                    "check train.lr and the data"
                )
            else:
                advice = "the model may need a different learning rate or more (varied) data"
            text = (
                f"smoothed loss {now:.3f} fell less than {100 * c.plateau_min_drop:g}% since "
                f"iter {mid} ({then:.3f}): {advice}"
            )
            self._fire("plateau", "INFO" if expected else "WARN", step, "loss plateau", text)

    def _mfu_rule(self, mfu: float | None, step: int) -> None:
        if mfu is None or mfu <= 0:
            return
        self._mfu.append(mfu)
        # a slow running level (an EMA over ~50 rows) that a short dip does not drag down
        old = self._mfu_level
        level = self._mfu_level = mfu if old is None else 0.96 * old + 0.04 * mfu
        now = statistics.median(self._mfu)
        if self._trips("mfu", now < self.cfg.mfu_drop_ratio * level):
            text = (
                f"MFU {now:.1f}% against its running level {level:.1f}%: hardware throttling, "
                "another process on the GPU, or the data loader cannot keep up"
            )
            self._fire("mfu", "WARN", step, "MFU dropping", text)
        # the W&B guide: MFU consistently under 20% means the GPU is kept waiting
        low = self.cfg.mfu_low
        if self._trips("mfu_low", len(self._mfu) == self._mfu.maxlen and max(self._mfu) < low):
            text = (
                f"MFU has stayed under {low:g}% (median {now:.1f}%) for {len(self._mfu)} rows: "
                "the GPU waits on data loading, the CPU or memory bandwidth rather than "
                "computing. A larger train.batch_size (or train.micro_batch=auto), "
                "train.compile=true and a model large enough for the card raise it"
            )
            self._fire("mfu_low", "INFO", step, "MFU low", text)

    def _dt_rule(self, dt: float | None, step: int) -> None:
        if dt is None or dt <= 0:
            return
        self._dt.append(dt)
        if len(self._dt) < self.cfg.smooth_rows:
            return
        now = statistics.median(self._dt)
        self._dt_level = level = min(self._dt_level, now)  # the settled step time
        if self._trips("step_time", now > self.cfg.dt_rise_ratio * level):
            text = (
                f"{now:.0f} ms per step against a settled {level:.0f} ms: a memory leak, "
                "swapping, thermal throttling or another process competing for the device"
            )
            self._fire("step_time", "WARN", step, "step time rising", text)

    def _memory_rules(self, row: dict[str, Any], step: int) -> None:
        c = self.cfg
        mem = _num(row, "gpu/mem_allocated_gb")
        if mem is not None:
            grew = self._mem_prev is not None and mem > self._mem_prev + 1e-6
            self._mem_streak = n = self._mem_streak + 1 if grew else 0
            self._mem_prev = mem
            if self._trips("memory_growth", n >= c.mem_growth_rows):
                text = (
                    f"allocated memory rose on each of the last {n} rows, now {mem:.2f} GB: "
                    "something keeps tensors alive across steps (a leak)"
                )
                self._fire("memory_growth", "WARN", step, "GPU memory growing", text)
        total = _num(row, "gpu/mem_total_gb")
        peak = _num(row, "gpu/max_mem_allocated_gb") or mem
        if (
            total
            and peak is not None
            and self._trips("memory_limit", peak > c.mem_limit_ratio * total)
        ):
            text = (
                f"peak {peak:.2f} GB of {total:.2f} GB ({100 * peak / total:.0f}%): out of "
                "memory is close; lower train.batch_size and raise train.grad_accum"
            )
            self._fire("memory_limit", "WARN", step, "GPU memory near the limit", text)

    def _phase_rules(self, step: int, mfu: bool = True) -> None:
        """The W&B guide's early/mid/late guidance scaled to this run: a line as each phase starts,
        and for runs long enough to compare, a warning when loss is far above its range."""
        if self.max_iters <= 0:
            return
        scale = self.max_iters / SEED_ITERS
        long_run = self.max_iters >= self.cfg.phase_min_iters
        for p in PHASES:
            end = p.end * scale * (LATE_CHECK if p.name == "late" else 1)
            if long_run and step >= end and p.name not in self._checked_ends:
                self._checked_ends.add(p.name)
                # the W&B guide's ranges assume the LR warm-up is over by the end of the early phase
                if self._lr_peak_step != step and len(self._losses) >= self.cfg.trend_rows:
                    self._range_check(p, step)
        p = next(p for p in reversed(PHASES) if step >= p.start * scale)
        # the first row is early training, and so is every row while the LR still warms up
        # (the guide's mid phase has the LR at its peak); phases only move forward
        if self._phase is None or self._lr_peak_step == step and self._phase == "early":
            p = PHASES[0]
        if p.name != self._phase:
            self._phase = p.name
            lo = round(p.start * scale)
            hi = max(lo + 1, round(p.end * scale))  # a short run: "0-1", not "0-0"
            text = (
                f"steps {lo}-{hi} of {self.max_iters} (the W&B guide's {p.start}-{p.end} of "
                f"{SEED_ITERS}): {expectation(p.name, self.schedule, mfu)}"
            )
            self._fire("phase", "INFO", step, f"{p.name} training", text)

    def _range_check(self, p: Phase, step: int) -> None:
        now = statistics.median(self._losses[-self.cfg.trend_rows :])
        if now > p.high * (1 + self.cfg.phase_range_slack):
            text = (
                f"smoothed loss {now:.2f}; the W&B guide expects {p.low:g}-{p.high:g} by the end "
                f"of {p.name} training: learning is slow (learning rate, data, model size)"
            )
            self._fire("phase_range", "WARN", step, f"loss high for {p.name} training", text)

    # -- firing ----------------------------------------------------------------------------

    def _trips(self, rule: str, cond: bool, rearm: int = 0) -> bool:
        """True when `rule` should fire now: `cond` holds and the rule is armed. A rule re-arms
        after `rearm_rows` (or `rearm`) clear rows, so a condition that flickers at its
        threshold is still reported once."""
        if cond:
            self._clear[rule] = 0
            fire = not self._active.get(rule)
            self._active[rule] = True
            return fire
        self._clear[rule] = self._clear.get(rule, 0) + 1
        if self._clear[rule] >= max(rearm, self.cfg.rearm_rows):
            self._active[rule] = False
        return False

    def _fire(self, rule: str, level: str, step: int, title: str, text: str) -> None:
        found = Finding(rule, level, step, title, text)
        self.findings.append(found)
        self._new.append(found)
        if self.console is not None:
            self.console(found.line())
        if self.tracker is not None:
            self.tracker.alert(title, text, level, step=step, rule=rule)

    # -- restart -----------------------------------------------------------------------------

    # What the rules remember between rows: saved in checkpoints, so a resumed run judges its
    # rows against the levels of the whole run, not only of the part since the restart.
    STATE = [
        "_active",
        "_clear",
        "_loss_steps",
        "_losses",
        "_best_fast",
        "_best",
        "_lr_max",
        "_lr_peak_step",
        "_rows",
        "_mfu_level",
        "_mfu",
        "_dt",
        "_dt_level",
        "_mem_prev",
        "_mem_streak",
        "_evals",
        "_best_eval",
        "_phase",
        "_checked_ends",
        "_nonfinite",
    ]

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.STATE:
            value = getattr(self, name)
            if isinstance(value, (deque, set)):
                value = sorted(value) if isinstance(value, set) else list(value)
            elif isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            out[name] = value
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if name not in self.STATE:
                continue
            current = getattr(self, name)
            if isinstance(current, deque):
                value = deque(value, maxlen=current.maxlen)
            elif isinstance(current, set):
                value = set(value)
            elif isinstance(value, str) and value in ("inf", "-inf", "nan"):
                value = float(value)
            elif name == "_evals":
                value = [tuple(e) for e in value]
            setattr(self, name, value)
