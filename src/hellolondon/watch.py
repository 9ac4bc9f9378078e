"""A live terminal view of a training run, for people without a browser: latest values, small
sparklines, progress and the health findings, redrawn every few seconds from the run folder.

It only reads the files training writes, incrementally: each refresh parses the lines added
since the last one, and a line still being written waits for the next refresh.
"""

from __future__ import annotations

import shlex
import shutil
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from hellolondon.errors import Terminated, UserError
from hellolondon.report.rundata import to_float, to_number
from hellolondon.rundir import RunDir, Tail, runs_in, status_words
from hellolondon.units import fmt_duration, fmt_value

BLOCKS = "▁▂▃▄▅▆▇█"
ASCII = " .:-=+*#"
KEEP = 4000  # values kept per metric for the sparklines
STALE_S = 120  # no new row for this long: say so
_loss = partial(fmt_value, decimals=4)  # a diverged run's 3.3e21 stays short, as in `report`
# (metric, label, how its value is written): the rows of the view, the W&B guide's panels first
METRICS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("train/loss", "train/loss", _loss),
    ("train/mfu", "train/mfu", "{:.1f}%".format),
    ("train/lr", "train/lr", "{:.2e}".format),
    ("train/dt_ms", "train/dt_ms", "{:,.0f} ms".format),
    ("eval/val_loss", "eval/val_loss", _loss),
    ("eval/train_loss", "eval/train_loss", _loss),
    ("train/tokens_per_sec", "tokens/s", "{:,.0f}".format),
    ("train/grad_norm", "grad norm", partial(fmt_value, decimals=3)),
    ("gpu/mem_allocated_gb", "GPU memory", "{:.2f} GB".format),
)


FIGURES_WIDTH = 58  # a metric's line without its sparkline: name, value, range
MIN_WIDTH = FIGURES_WIDTH + 10  # and a sparkline of 10 at least


def sparkline(values: list[float], width: int, chars: str = BLOCKS) -> str:
    """The last values squeezed into `width` characters (each the mean of its share)."""
    if not values or width <= 0:
        return ""
    n = len(values)
    k = min(width, n)
    cols = [values[i * n // k : (i + 1) * n // k] for i in range(k)]
    means = [sum(c) / len(c) for c in cols]
    lo, hi = min(means), max(means)
    if hi - lo < 1e-12:
        return chars[len(chars) // 2] * len(means)
    top = len(chars) - 1
    return "".join(chars[round((m - lo) / (hi - lo) * top)] for m in means)


class RunView:
    """What the view shows of one run folder, updated by `refresh()`."""

    def __init__(self, path: Path) -> None:
        self.run = RunDir.open(path)
        self.path = self.run.path
        self.metrics, self.events_tail = Tail(self.run.metrics_file), Tail(self.run.events_file)
        self.values: dict[str, deque[float]] = {}
        self.latest: dict[str, tuple[int, float]] = {}  # NaN too: a diverged run's loss is "nan"
        self.iteration = 0  # of the last training row, finite or not
        self.events: list[dict[str, Any]] = []
        self.last_time: float | None = None
        self.config: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self.process: tuple[str, str] | None = None  # the training process: running, killed ...
        self.gone: int | None = None  # its id, once it is gone without ending cleanly

    def refresh(self) -> None:
        self.config = self.config or self.run.read_config()
        self.summary = self.run.read_summary()
        record = self.run.read_process_record()  # once: both answers are of the same record
        self.process = self.run.training_process(record)
        self.gone = self.run.gone_process(record)
        rows, restarted = self.metrics.read()
        if restarted:
            self.values.clear()
            self.latest.clear()
            self.iteration = 0
        for row in rows:
            step = int(to_float(row.get("step")) or 0)
            self.last_time = to_float(row.get("time")) or self.last_time
            if "train/iter" in row or "train/loss" in row:  # a training row
                self.iteration = int(to_float(row.get("train/iter")) or step)
            for key, _, _ in METRICS:
                x = to_float(row.get(key))
                if x is not None:
                    self.values.setdefault(key, deque(maxlen=KEEP)).append(x)
                    self.latest[key] = (step, x)
                elif (raw := to_number(row.get(key))) is not None:  # nan, inf: shown as it is,
                    self.latest[key] = (step, raw)  # left out of the sparkline
        events, restarted = self.events_tail.read()
        self.events = events if restarted else self.events + events

    @property
    def name(self) -> str:
        return str((self.config.get("tracking") or {}).get("run_name") or self.path.resolve().name)

    @property
    def finished(self) -> bool:
        """Ended cleanly: a summary, and no training process (a resumed run keeps the summary
        of its last segment while it runs again)."""
        return bool(self.summary) and self.process is None


def _status(view: RunView, now: float) -> str:
    it = view.iteration
    if not it and view.finished:  # no readable row: the summary still says how far it got
        it = int(to_float(view.summary.get("iterations")) or 0)
    max_iters = to_float((view.config.get("train") or {}).get("max_iters"))
    parts = [
        f"iter {it:,}" + (f"/{int(max_iters):,} ({100 * it / max_iters:.0f}%)" if max_iters else "")
    ]
    dts = list(view.values.get("train/dt_ms", []))[-5:]
    if view.finished:
        parts.append("stopped early" if view.summary.get("stopped_early") else "finished")
    elif max_iters and dts and (view.process is None or view.process[0] == "running"):
        # no time left to guess for a run that has died
        parts.append(f"eta {fmt_duration((max_iters - it) * statistics.median(dts) / 1000)}")
    if view.process is not None and view.process[0] != "running":
        parts.append(status_words(*view.process))
    elif view.last_time is not None and not view.finished:
        age = now - view.last_time
        unknown = view.process is None and age > STALE_S  # a run of another machine, say
        parts.append(f"last row {fmt_duration(age)} ago" + (" (stopped?)" if unknown else ""))
    return "  |  ".join(parts)


def _no_rows_line(view: RunView) -> str:
    """What a frame without a metrics row says: waiting, unless the run has ended."""
    ended = view.finished or (view.process is not None and view.process[0] != "running")
    if not ended:
        return "waiting for the first metrics row (training logs one every log interval)"
    log = view.run.metrics_file
    if log.is_file() and log.stat().st_size:
        return f"no metrics row to show: the run has ended and {log.name} has no readable line"
    return "no metrics row to show: the run ended before it logged one"


def render_frame(
    view: RunView, width: int = 100, now: float | None = None, chars: str = BLOCKS
) -> str:
    now = time.time() if now is None else now
    lines = [f"helloLondon watch: {view.name}"[:width], _status(view, now)[:width], ""]
    if not view.latest:
        lines.append(_no_rows_line(view))
    spark_w = max(MIN_WIDTH, width) - FIGURES_WIDTH
    for key, label, fmt in METRICS:
        if key not in view.latest:
            continue
        vals = list(view.values.get(key, ()))
        step, x = view.latest[key]
        span = f"{fmt(min(vals))} .. {fmt(max(vals))}" if len(vals) > 1 else ""
        line = f"{label:<15}{fmt(x):>12}  {sparkline(vals[-spark_w * 4 :], spark_w, chars):<{spark_w}}  {span}"
        lines.append(line[:width])
    if "train/mfu" not in view.values and view.latest:
        lines.append("train/mfu      not measured (CPU run, or a GPU without a known peak)"[:width])
    lines += [
        "",
        "health findings" + (f" (last 8 of {len(view.events)})" if len(view.events) > 8 else ""),
    ]
    for e in view.events[-8:] or [{"level": "", "title": "none so far"}]:
        step = e.get("step")
        where = f" at iter {step}" if step is not None else ""
        level = f"[{e.get('level')}] " if e.get("level") else ""
        text = f": {e['text']}" if e.get("text") else ""
        lines.append(f"  {level}{e.get('title', '')}{where}{text}"[:width])
    return "\n".join(lines)


def _pick(path: Path, out: TextIO) -> Path:
    """A folder of runs (such as runs/) means its newest run."""
    if path.is_dir() and not RunDir.is_run(path):
        inside = runs_in(path)
        if inside:
            print(f"watching the newest run in {path}: {inside[0].path.name}", file=out)
            return inside[0].path
        if not any(path.iterdir()):  # an out_dir before its first run, most likely
            raise UserError(
                f"{path} is empty: no run has started there yet; give a run folder, or the "
                "out_dir of a run that has started"
            )
    return path


def watch(
    path: str | Path,
    interval: float = 5.0,
    once: bool = False,
    out: TextIO | None = None,
    width: int | None = None,
) -> int:
    """Draw the view every `interval` seconds until the run finishes (0), its training process
    on this machine is gone without finishing (1, after a line that says how to go on) or
    Ctrl-C (0); `once` draws one frame without screen control codes (for pipes and tests) and
    returns the same codes, 0 for a run still going."""
    out = out or sys.stdout
    view = RunView(_pick(Path(path), out))
    width = width or shutil.get_terminal_size((100, 24)).columns
    encoding = getattr(out, "encoding", None) or "utf-8"
    chars = BLOCKS if _can_encode(BLOCKS, encoding) else ASCII
    live = not once and out.isatty()
    try:
        while True:
            view.refresh()
            frame = render_frame(view, width, chars=chars)
            out.write(("\x1b[H\x1b[2J" if live else "") + frame + "\n")
            out.flush()
            if view.finished:
                return 0
            if view.gone is not None:  # `--once` too: a script can tell a dead run by the code
                print(gone_line(view), file=sys.stderr)
                return 1
            if once:
                return 0
            if not live:
                out.write("-" * min(width, 40) + "\n")
            time.sleep(interval)
    except KeyboardInterrupt as exc:
        out.write("\n")
        if isinstance(exc, Terminated):  # a `kill` is said as such (exit 143), Ctrl-C is not
            raise
        return 0


def gone_line(view: RunView) -> str:
    """What a run whose training process died (on this machine) needs next, in one line."""
    from hellolondon.tracking.wandb_tracker import resume_command

    state, detail = view.process or ("killed", "")
    how = {"failed": detail, "aborted": status_words(state, detail)}.get(
        state, "killed, or it ended without a word"
    )
    sweep = sweep_of(view.run.path)
    if sweep:  # the sweep resumes its trials and records them
        then = (
            f"its sweep goes on with it: run the same `hellolondon sweep` command again ({sweep})"
        )
    elif view.run.killed_while_starting():
        then = (
            "it was killed while starting, before it wrote anything; start it again (the same "
            f"`hellolondon train` command; with --run-name {view.run.name} it reuses this folder)"
        )
    elif view.run.has_checkpoints():
        then = f"go on with: {resume_command(view.run)}"
    else:
        then = "it saved no checkpoint to go on from; train it again under another --run-name"
    return f"the run's training process {view.gone} is gone ({how}); {then}"


def sweep_of(run: Path) -> str | None:
    """`sweep folder F` where `run` is a trial of the sweep in F; None for a run of its own."""
    from hellolondon.search.folder import SweepFolder
    from hellolondon.tracking.wandb_tracker import show_path

    folder = SweepFolder.of_trial(run)
    return None if folder is None else f"sweep folder {shlex.quote(show_path(folder.path))}"


def _can_encode(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
