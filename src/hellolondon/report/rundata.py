"""Read run folders back for the report and the terminal view: rows, findings, summary.

Everything comes from the files training writes in the run folder (metrics, events, summary,
config), so no W&B is needed and a run killed mid-write still reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hellolondon.errors import UserError
from hellolondon.rundir import RunDir, cut_short, status_words
from hellolondon.units import fmt_count, fmt_duration, fmt_value


class Panel(NamedTuple):
    title: str
    keys: tuple[str, ...]
    unit: str = ""
    empty: str = "not logged by this run"  # shown when no run has the keys


# The seed's five panels in its order (top left to bottom right), then the eval curves, GPU
# memory, throughput and gradient norm.
PANELS = (
    Panel("train/loss", ("train/loss",), "loss"),
    Panel("train/mfu", ("train/mfu",), "%", "no MFU: not measured on CPU or for an unknown GPU"),
    Panel("train/lr", ("train/lr",)),
    Panel("train/iter", ("train/iter",)),
    Panel("train/dt_ms", ("train/dt_ms",), "ms"),
    Panel("eval loss", ("eval/train_loss", "eval/val_loss"), "loss", "no evaluation yet"),
    Panel(
        "GPU memory",
        ("gpu/mem_allocated_gb", "gpu/max_mem_allocated_gb", "gpu/mem_reserved_gb"),
        "GB",
        "no GPU metrics: a CPU run",
    ),
    Panel("train/tokens_per_sec", ("train/tokens_per_sec",), "tokens/s"),
    Panel("train/grad_norm", ("train/grad_norm",)),
)


def to_number(value: Any) -> float | None:
    """A logged value as a float, NaN and infinity included; None where it is no number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)  # JSON cannot hold NaN: the tracker writes it as text, "nan"
    except (TypeError, ValueError):
        return None


def to_float(value: Any) -> float | None:
    """A logged value as a finite float, else None."""
    x = to_number(value)
    return x if x is not None and math.isfinite(x) else None


@dataclass
class RunData:
    path: Path
    name: str
    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    summary: dict[str, Any]  # the run's summary: written when training ends
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    _series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict, repr=False)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric, finite values only, one per step (the last logged)."""
        if key not in self._series:
            by_step: dict[int, float] = {}
            for row in self.rows:
                x, step = to_float(row.get(key)), to_float(row.get("step"))
                if x is not None and step is not None:
                    by_step[int(step)] = x
            steps = sorted(by_step)
            self._series[key] = (steps, [by_step[s] for s in steps])
        return self._series[key]

    def last_logged(self, key: str) -> float | None:
        """The last value logged for `key`, NaN and infinity included (a run that diverged
        ends on them): None only where no row holds a number."""
        for row in reversed(self.rows):
            x = to_number(row.get(key))
            if x is not None:
                return x
        return None

    def has(self, key: str) -> bool:
        return bool(self.series(key)[0])

    def last(self, key: str) -> float | None:
        values = self.series(key)[1]
        return values[-1] if values else None

    @property
    def max_iters(self) -> int | None:
        value = to_float((self.config.get("train") or {}).get("max_iters"))
        return int(value) if value else None


def load_run(path: str | Path) -> RunData:
    run = RunDir.open(path)
    for log in (run.metrics_file, run.events_file):  # else read as empty: "no rows yet"
        if log.exists() and not log.is_file():
            what = "a folder" if log.is_dir() else "not a plain file"
            raise UserError(
                f"{log} is {what}, not a file of rows; move it away (training writes this log "
                "as a file)"
            )
    config = run.read_config()
    name = str((config.get("tracking") or {}).get("run_name") or run.name)
    data = RunData(run.path, name, run.rows(), run.events(), run.read_summary(), config)
    if not run.metrics_file.is_file():
        data.notes.append(f"{name}: no metrics yet (training has not logged a row)")
    elif not data.rows:
        data.notes.append(f"{name}: no metric rows yet")
    if not config:  # every setting would show as differing, with nothing in its cells
        what = "cannot be read" if run.config_file.is_file() else "is missing"
        data.notes.append(f"{name}: {run.config_file} {what}: its settings are left out")
    if not data.summary and run.summary_file.is_file():  # the rows tell all but the status
        data.notes.append(
            f"{name}: {run.summary_file} cannot be read: its values come from the rows"
        )
    if cut_short(run.metrics_file):
        data.notes.append(
            f"{name}: the last metrics line was cut short (the run was killed mid-write?); "
            "it is left out"
        )
    return data


def load_runs(paths: list[str | Path]) -> tuple[list[RunData], list[str]]:
    """Runs with at least one row, and notes on what was odd or left out. Two runs of the same
    name are told apart by their folders."""
    if not paths:
        raise UserError("give at least one run folder, such as runs/<run-name>")
    runs, notes, seen = [], [], set()
    for p in paths:
        if Path(p).resolve() in seen:
            notes.append(f"{p}: given more than once, shown once")
            continue
        seen.add(Path(p).resolve())
        run = load_run(p)
        if run.rows:
            runs.append(run)
            notes += run.notes
        else:  # one note, by folder: its name may be another run's
            notes.append(f"{p}: left out (no metric rows yet)")
    if not runs:
        raise UserError(
            "no metric rows in "
            + ", ".join(map(str, paths))
            + ": training logs metric rows from its first log interval on"
        )
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = f"{r.name} ({r.path})"
    return runs, notes


def _status(run: RunData, times: list[float]) -> str:
    """finished, stopped early, running, killed, failed, aborted; from the training process's
    record where it has one (a resumed run that dies keeps its last segment's summary)."""
    known = RunDir(run.path).status()
    if known is not None:
        state, detail = known
        if state in ("failed", "aborted"):  # what ended it
            return status_words(state, detail)
        return "stopped early" if state == "stopped" else state
    age = time.time() - max(times) if times else math.inf  # a run from another machine
    return "running" if age < 600 else "not finished (killed?)"


def _first(summary: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        value = to_float(summary.get(k))
        if value is not None:
            return value
    return None


def _current_summary(run: RunData) -> dict[str, Any]:
    """The run's summary while it describes the rows: a resumed run that is training, or was
    killed, has logged rows past its last segment's summary, which then tells nothing."""
    done = to_float(run.summary.get("iterations"))
    last = max(
        (int(s) for s in (to_float(r.get("step")) for r in run.rows) if s is not None), default=0
    )
    return run.summary if done is not None and done >= last else {}


def _wall_from_rows(run: RunData, times: list[float]) -> float | None:
    """Wall time when no current summary holds it: the last segment's summary (a resumed run)
    plus the time its newer rows span, else the span of every row."""
    before = to_float(run.summary.get("wall_time_s"))
    done = to_float(run.summary.get("iterations"))
    if before is not None and done is not None:
        newer = [
            to_float(r.get("time"))
            for r in run.rows
            if (to_float(r.get("step")) or 0) > done and to_float(r.get("time")) is not None
        ]
        return before + (max(newer) - min(newer) if len(newer) > 1 else 0.0)
    return max(times) - min(times) if len(times) > 1 else None


def _timed(run: RunData) -> tuple[float, float]:
    """(tokens, seconds) of the timed training steps, from the rows: each row's ms per step
    times the steps since the row before it, the summary's own definition of tokens/s."""
    tokens = seconds = 0.0
    previous = 0
    for row in run.rows:
        step, dt, tps = (
            to_float(row.get(k)) for k in ("step", "train/dt_ms", "train/tokens_per_sec")
        )
        if step is None or dt is None or tps is None:
            continue
        n = max(0, int(step) - previous)
        previous = int(step)
        seconds += dt * n / 1000
        tokens += tps * dt * n / 1000
    return tokens, seconds


def summarize(run: RunData) -> dict[str, Any]:
    """The summary table's row: the run's summary where training wrote one that is current,
    else the rows."""
    s = _current_summary(run)
    steps = run.series("train/loss")[0]
    v_steps, vals = run.series("eval/val_loss")
    iters = _first(s, "iterations") or run.last("train/iter") or (steps[-1] if steps else 0)
    best_val = _first(s, "best_val_loss")
    best_step = to_float(s.get("best_step")) if best_val is not None else None
    if best_val is None and vals:
        best_val = min(vals)
        best_step = v_steps[vals.index(best_val)]
    final = run.last_logged("train/loss")
    tokens = _first(s, "tokens_seen") or run.last("train/tokens_seen")
    per_step = to_float((run.config.get("hardware") or {}).get("tokens_per_step"))
    if tokens is None and per_step:
        tokens = per_step * iters
    times = [t for t in (to_float(r.get("time")) for r in run.rows) if t is not None]
    wall = _first(s, "wall_time_s") or _wall_from_rows(run, times)
    timed_tokens, seconds = _timed(run)
    tps = _first(s, "mean_tokens_per_sec") or (timed_tokens / seconds if seconds else None)
    levels = [str(e.get("level", "")) for e in run.events]
    return {
        "run": run.name,
        "status": _status(run, times),
        "iterations": int(iters),
        "max_iters": run.max_iters,
        "recipe": recipe(run.config.get("train") or {}),
        "final_train_loss": final,
        "best_val_loss": best_val,
        "best_val_step": int(best_step) if best_step is not None else None,
        "tokens": tokens,
        "wall_time_s": wall,
        "tokens_per_sec": tps,
        "warnings": levels.count("WARN"),
        "errors": levels.count("ERROR"),
    }


def recipe(train: dict[str, Any]) -> str:
    """Optimizer and schedule, as `adamw + cosine`; runs from before the choice used those."""
    return f"{train.get('optimizer', 'adamw')} + {train.get('schedule', 'cosine')}"


def summary_cells(row: dict[str, Any]) -> dict[str, str]:
    """The summary row as text, in the table's column order."""
    best = row["best_val_loss"]
    at = f" @ {row['best_val_step']}" if row["best_val_step"] is not None else ""
    of = f"/{row['max_iters']}" if row["max_iters"] else ""
    final = row["final_train_loss"]
    return {
        "run": row["run"],
        "status": row["status"],
        "iterations": f"{row['iterations']}{of}",
        "recipe": row["recipe"],
        "best val loss": f"{fmt_value(best)}{at}" if best is not None else "-",
        "final train loss": fmt_value(final),
        "tokens": fmt_count(row["tokens"]),
        "wall time": fmt_duration(row["wall_time_s"]),
        "tokens/s": fmt_count(row["tokens_per_sec"]),
        "findings": f"{row['warnings']} warn, {row['errors']} error",
    }
