"""Run a sweep offline: W&B's engine proposes each trial's values (grid, random, bayes) and decides
early stops (hyperband); every trial is an ordinary `hellolondon train` process, so it can be
killed and resumed like any run. A sweep killed midway resumes: finished trials stay, the one
that was running continues from its checkpoint."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hellolondon.errors import UserError
from hellolondon.prepare import load_meta
from hellolondon.rundir import RunDir, status_words
from hellolondon.search.folder import SweepFolder, Trial
from hellolondon.search.space import SweepSpec, import_engine, load_spec, plain, settings_args
from hellolondon.tracking.secrets import scrub_text

POLL_S = 2.0  # how often a running trial's metrics are read for early termination
STOP_WAIT_S = 120.0  # a stopped trial's time to save its checkpoint and exit
MAX_FAILURES_IN_A_ROW = 3


def default_out_dir(spec: SweepSpec) -> Path:
    return Path(spec.base.out_dir) / f"sweep-{spec.name}"


def _run_data(path: Path):
    from hellolondon.report.rundata import load_run

    try:
        return load_run(path)
    except UserError:
        return None


# (history, summary value) of ended trials, read once
_ENDED: dict[tuple[str, str, str], tuple[list[float], float | None]] = {}


def _metric(
    folder: SweepFolder, trial: Trial, metric: str | None
) -> tuple[list[float], float | None]:
    """The metric's logged values, and its value in the run's summary (where training writes
    best_val_loss, wall_time_s ... at the end), as W&B would hold them for the trial."""
    from hellolondon.report.rundata import to_float

    key = (str(folder.path), trial.name, metric or "")
    if key in _ENDED:
        return _ENDED[key]
    run = _run_data(folder.trial_dir(trial)) if metric else None
    values = run.series(metric)[1] if run is not None else []
    summary = to_float(run.summary.get(metric)) if run is not None and metric else None
    if summary is not None and not math.isfinite(summary):
        summary = None
    if trial.state in ("finished", "stopped", "failed"):
        _ENDED[key] = (values, summary)
    return values, summary


def _objective(values: list[float], summary: float | None) -> float | None:
    """The trial's value as W&B's summary holds it, which W&B's own sweeps search and rank by:
    the value the summary set, else the last one logged (the end of training, not the best
    along the way, nor the untrained model's first evaluation)."""
    if summary is not None:
        return summary
    return values[-1] if values else None


def _check_data(data_dir: str) -> None:
    """Prepared data in `data_dir`; a missing folder is said in the sweep's terms, since
    `sweep` has no --data of its own and a relative path depends on where it starts."""
    if not Path(data_dir).exists():
        raise UserError(
            f"the sweep's data folder {data_dir} does not exist (--data in its command:, or a "
            "swept data.data_dir; a relative path is read from the folder the sweep starts in); "
            "start the sweep where that folder is, or change the sweep file"
        )
    load_meta(data_dir)


def engine_run(folder: SweepFolder, trial: Trial, spec: SweepSpec) -> Any:
    """The trial as the engine sees a W&B run: values, state and the metric's history."""
    sweeps = import_engine()
    state = {
        "running": sweeps.RunState.running,
        "finished": sweeps.RunState.finished,
        "stopped": sweeps.RunState.finished,  # its values still tell the search something
        "failed": sweeps.RunState.failed,
        "killed": sweeps.RunState.running,  # to be resumed: its values are taken
    }[trial.state]
    metric = spec.metric
    values, in_summary = _metric(folder, trial, metric)
    history = [{metric: v} for v in values] if metric else []
    value = _objective(values, in_summary) if metric else None
    summary = {metric: value} if metric and value is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sweeps.SweepRun(
            name=trial.name,
            config={k: {"value": v} for k, v in trial.values.items()},
            state=state,
            history=history,
            summary_metrics=summary,
            search_info=trial.search_info or None,
        )


def propose(spec: SweepSpec, folder: SweepFolder, trials: list[Trial]) -> dict[str, Any] | None:
    """The engine's next values, or None when a grid is done."""
    sweeps = import_engine()
    runs = [engine_run(folder, t, spec) for t in trials]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suggestion = sweeps.next_run(spec.config, runs)
    if suggestion is None:
        return None
    values = {k: plain(v["value"]) for k, v in suggestion.config.items()}
    info = {k: _jsonable(v) for k, v in (suggestion.search_info or {}).items()}
    return {"values": values, "search_info": info}


def _jsonable(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


def grid_size(spec: SweepSpec, at_most: int = 100_000) -> int | None:
    """The points of a grid as the engine counts them (repeated values once); None for other
    methods and for grids larger than `at_most`."""
    if spec.method != "grid":
        return None
    sweeps = import_engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = sweeps.next_runs(spec.config, [], n=at_most + 1)
    size = sum(p is not None for p in points)
    return size if size <= at_most else None


def should_stop(spec: SweepSpec, folder: SweepFolder, trials: list[Trial], trial: Trial) -> bool:
    """Hyperband, as the engine decides it from every trial's metric history."""
    sweeps = import_engine()
    runs = [engine_run(folder, t, spec) for t in trials]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stop = sweeps.stop_runs(spec.config, runs)
    return any(r.name == trial.name for r in stop)


def trial_command(spec: SweepSpec, folder: SweepFolder, trial: Trial) -> list[str]:
    """`python -m hellolondon train <fixed> <values> --run-name ... --group ...`, or
    `train --resume <trial folder>` when the trial has a checkpoint to continue from."""
    from hellolondon.train.checkpoint import find_resumable

    run_dir = folder.trial_dir(trial)
    head = [sys.executable, "-m", "hellolondon", "train"]
    if run_dir.exists():
        try:
            find_resumable(run_dir, log=lambda *_: None)
            return [*head, "--resume", str(run_dir)]
        except UserError:  # started, but killed before its first checkpoint: start it again
            shutil.rmtree(run_dir)
    return [
        *head,
        *spec.fixed,
        *settings_args(trial.values),
        "--run-name",
        trial.name,
        "--group",
        spec.name,
        "--out-dir",
        str(folder.trials_dir),
    ]


def run_trial(
    spec: SweepSpec,
    folder: SweepFolder,
    trials: list[Trial],
    trial: Trial,
    log: Callable[[str], None],
) -> None:
    cmd = trial_command(spec, folder, trial)
    resumed = "--resume" in cmd
    folder.log_path(trial).parent.mkdir(parents=True, exist_ok=True)
    with open(folder.log_path(trial), "a", encoding="utf-8") as out:
        out.write(f"$ {scrub_text(shlex.join(cmd))}\n")  # as a shell takes it, no secret
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_trial_env())
        trial.pid = proc.pid
        folder.save(trials)
        stopped = False
        try:
            while not _exited(proc, POLL_S):
                if (
                    spec.early_terminate
                    and not stopped
                    and should_stop(spec, folder, trials, trial)
                ):
                    log(f"  {trial.name}: early_terminate (hyperband) stops it")
                    proc.send_signal(signal.SIGTERM)  # the trainer saves a checkpoint and ends
                    stopped = True
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: let the trial save a checkpoint, leave
            proc.send_signal(signal.SIGTERM)  # graceful, even after the terminal's Ctrl-C
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            log(f"  {trial.name} stopped: its checkpoint is where it goes on from")
            raise
    trial.exit_code = proc.returncode
    run = _run_data(folder.trial_dir(trial))
    ended = proc.returncode == 0 and run is not None and bool(run.summary)
    signalled = ended and run.summary.get("stop_reason") == "stopped by a signal" and not stopped
    if ended and not signalled:
        trial.state = "stopped" if stopped else "finished"
        trial.note = "resumed from its checkpoint" if resumed else ""
    elif signalled or proc.returncode < 0 or proc.returncode == 143:
        # killed on its own (the OOM killer, a `kill`): the next run of the sweep resumes it
        trial.state = "killed"
        how = _how_ended(proc.returncode, folder.log_path(trial))
        trial.note = f"{how}; the same sweep command resumes it from its checkpoint"
    elif aborted := _aborted(folder.trial_dir(trial)):  # a second Ctrl-C: as if killed
        trial.state = "killed"
        trial.note = f"{aborted}; the same sweep command resumes it from its checkpoint"
    else:
        trial.state = "failed"
        trial.note = _last_line(folder.log_path(trial))


def _how_ended(returncode: int, log: Path) -> str:
    """A trial's end by a signal in words: the signal its exit status names, else (exit 0: its
    training heeded the signal, saved a checkpoint and ended) the one its console names."""
    if returncode == 0:
        heeded = _heeded_signal(log)
        return f"killed by {heeded}" if heeded else "killed by a signal"
    number = -returncode if returncode < 0 else returncode - 128  # 143: a shell's SIGTERM
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {number}"


def _heeded_signal(log: Path) -> str | None:
    """The signal training said it stops for (`SIGINT: stopping after ...`) in the trial's
    console since its latest start (the `$ command` line each start of the trial writes)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    latest = text[text.rfind("\n$ ") + 1 :] if "\n$ " in text else text
    found = re.search(r"^(SIG[A-Z0-9]+): stopping", latest, re.MULTILINE)
    return found.group(1) if found else None


def _aborted(path: Path) -> str | None:
    """How a trial's training was aborted ("aborted by a second Ctrl-C at step 12"), as its run
    folder records it; None for one that was not."""
    status = RunDir(path).status() if RunDir.is_run(path) else None
    return status_words(*status) if status is not None and status[0] == "aborted" else None


def _exited(proc: subprocess.Popen, wait_s: float) -> bool:
    try:
        proc.wait(wait_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def _trained_to_the_end(path: Path) -> bool:
    """The run finished all its iterations (not stopped by a signal or early_terminate)."""
    run = _run_data(path)
    if run is None or not run.summary or run.summary.get("stopped_early"):
        return False
    return run.summary.get("iterations") == run.config.get("train", {}).get("max_iters")


def _check_not_alive(trial: Trial) -> None:
    """A sweep killed on its own leaves its trial running: never train one folder twice."""
    if not trial.pid:
        return
    try:
        cmdline = Path(f"/proc/{trial.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        cmdline = ""
    if trial.name in cmdline:
        raise UserError(
            f"trial {trial.name} is still running (process {trial.pid}); wait for it or stop it "
            f"(kill {trial.pid}), then run the sweep again"
        )


def _trial_env() -> dict[str, str]:
    """Our environment less W&B's per-run variables: each trial is a run of its own."""
    drop = ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RESUME")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _describe(values: dict[str, Any]) -> str:
    return " ".join(settings_args(values))


def run_sweep(
    spec_path: str | Path,
    trials: int | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
):
    """Run (or resume) the sweep; returns the ranked comparison of its trials."""
    spec = load_spec(spec_path)  # every check first: nothing starts on bad input
    _check_sweep(spec, trials)
    folder = SweepFolder(out_dir or default_out_dir(spec))
    resumed = folder.check_or_create(spec.text)
    with folder.locked(), _sigterm_as_interrupt():
        records = folder.load()
        log(_opening_line(spec, folder, records, resumed))
        ends = [n for n in (trials, grid_size(spec)) if n]
        total = f"/{min(ends)}" if ends else ""
        _settle_unfinished(spec, folder, records, log)
        _run_new_trials(spec, folder, records, trials, total, log)
        return finish(spec, folder, records, log)


def _check_sweep(spec: SweepSpec, trials: int | None) -> None:
    """Refuses a trial count the sweep cannot use, and data that every trial would miss."""
    if trials is not None and trials < 1:
        raise UserError("--trials must be at least 1")
    if trials is None and spec.method != "grid":
        raise UserError(f"a {spec.method} sweep has no end of its own; give --trials N")
    swept = (
        spec.config["parameters"].get("data.data_dir", {}) if "data.data_dir" in spec.params else {}
    )
    data_dirs = swept.get("values") or [swept.get("value") or spec.base.data.data_dir]
    for data_dir in data_dirs:  # every trial would fail on missing data: say it once
        _check_data(data_dir)


def _opening_line(spec: SweepSpec, folder: SweepFolder, records: list[Trial], resumed: bool) -> str:
    """The sweep's first line: its method, parameters, metric and folder; trials done if resumed."""
    return (
        f"sweep {spec.name}: {spec.method} over {', '.join(spec.params)}"
        + (f", metric {spec.metric} ({spec.goal})" if spec.metric else "")
        + f"; folder {folder.path}"
        + (
            f" (resumed: {sum(t.state not in ('running', 'killed') for t in records)} trials done)"
            if resumed
            else ""
        )
    )


def _settle_unfinished(
    spec: SweepSpec, folder: SweepFolder, records: list[Trial], log: Callable[[str], None]
) -> None:
    """A resumed sweep's trials that were running when it ended: finished if they trained to
    the end since, else resumed."""
    for trial in records:
        if trial.state in ("running", "killed"):  # killed, or the sweep was while it ran
            _check_not_alive(trial)
            if _trained_to_the_end(folder.trial_dir(trial)):  # it outlived the sweep
                trial.state, trial.note = "finished", "finished after the sweep had ended"
            else:
                log(f"trial {trial.name}: resuming ({_describe(trial.values)})")
                run_trial(spec, folder, records, trial, log)
            folder.save(records)
            _report(trial, spec, folder, log)


def _run_new_trials(
    spec: SweepSpec,
    folder: SweepFolder,
    records: list[Trial],
    trials: int | None,
    total: str,
    log: Callable[[str], None],
) -> None:
    """Proposes and runs trials until there are `trials` (or the grid is done); stops the
    sweep after MAX_FAILURES_IN_A_ROW failed trials in a row. `total`: "/N", or ""."""
    failures = 0
    while trials is None or len(records) < trials:
        proposal = propose(spec, folder, records)
        if proposal is None:
            log("the grid is done")
            break
        trial = Trial(
            name=f"{spec.name}-{len(records) + 1:03d}",
            values=proposal["values"],
            search_info=proposal["search_info"],
        )
        records.append(trial)
        folder.save(records)  # before it starts: a killed sweep knows what was running
        log(f"trial {len(records)}{total} {trial.name}: {_describe(trial.values)}")
        run_trial(spec, folder, records, trial, log)
        folder.save(records)
        _report(trial, spec, folder, log)
        failures = failures + 1 if trial.state == "failed" else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise UserError(
                f"{failures} trials in a row failed; the last said: {trial.note} "
                f"(logs in {folder.path / 'logs'})"
            )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A sweep stopped with SIGTERM leaves as on Ctrl-C: its trial saves, the sweep resumes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(trial: Trial, spec: SweepSpec, folder: SweepFolder, log) -> None:
    if trial.state in ("failed", "killed"):
        log(f"  {trial.name} {trial.state} (exit {trial.exit_code}): {trial.note}")
        return
    metric = spec.metric or "eval/val_loss"
    value = _objective(*_metric(folder, trial, metric))
    log(f"  {trial.name} {trial.state}" + (f": {metric} {value:.4f}" if value is not None else ""))


def finish(spec: SweepSpec, folder: SweepFolder, records: list[Trial], log):
    from hellolondon.comparison import compare

    runs = [r for r in (_run_data(folder.trial_dir(t)) for t in records) if r is not None]
    runs = [r for r in runs if r.rows]
    if not runs:
        raise UserError(
            f"no trial of sweep {spec.name} logged anything (logs in {folder.path / 'logs'})"
        )
    table = compare(
        runs, metric=spec.metric or "eval/val_loss", goal=spec.goal, final=True,
        settings=list(spec.params),
    )  # fmt: skip
    text = table.text()
    data = table.to_json() | {
        "sweep": spec.name,
        "method": spec.method,
        "metric": spec.metric,
        "goal": spec.goal,
        "trials": [{"name": t.name, "state": t.state, "values": t.values} for t in records],
    }
    txt, _ = folder.write_ranking(text, data)
    states = [t.state for t in records]
    counts = ", ".join(
        f"{states.count(s)} {s}" for s in ("finished", "stopped", "killed", "failed") if s in states
    )
    log(f"\n{len(records)} trial{'s' * (len(records) != 1)} ({counts}), best first:\n{text}")
    ranked = {r.path.resolve() for r in runs}
    for t in records:  # a trial that failed before its first row is in no table: say it here
        if folder.trial_dir(t).resolve() not in ranked:
            log(
                f"not ranked: {t.name} {t.state}, logged no row ({' '.join(settings_args(t.values))})"
            )
    if "killed" in states:
        log("killed trials go on from their checkpoints when the same sweep command runs again")
    trials = shlex.quote(str(folder.trials_dir))  # a name with spaces pastes as one path
    log(f"\nwrote {txt}; the trials overlaid: hellolondon report {trials}/*")
    return table
