"""The local runs below an output folder: what each is, how far it got, and whether its W&B
record still waits for `wandb sync`. Reads only the run folders; no W&B import, no network."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hellolondon.rundir import RunDir, runs_in, status_words
from hellolondon.tracking.wandb_tracker import resume_command, segment_dirs, sync_command


@dataclass
class RunInfo:
    name: str
    path: str
    preset: str
    status: str  # running | finished | stopped | killed | killed at start | failed | aborted | -
    iterations: int | None
    best_val_loss: float | None
    wandb_mode: str  # online | offline | disabled | failed | - (no W&B record)
    wandb_status: str  # running | finished | upload_incomplete | failed | interrupted | -
    needs_sync: bool
    sync_command: str | None


def _progress(run: RunDir) -> tuple[int | None, float | None]:
    """(iterations, best val loss): the summary of a finished run, else the metrics so far."""
    summary = run.read_summary()
    iters, best = summary.get("iterations"), summary.get("best_val_loss")
    if iters is None or best is None:
        rows = run.rows()
        steps = [int(r["step"]) for r in rows if isinstance(r.get("step"), (int, float))]
        vals = [
            v
            for r in rows
            if isinstance(v := r.get("eval/val_loss"), (int, float)) and math.isfinite(v)
        ]
        iters = iters if iters is not None else (max(steps) if steps else None)
        best = best if best is not None else (min(vals) if vals else None)
    return iters, best


def _sync_state(run: RunDir, state: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether W&B data of this run sits on disk only, and the command that uploads it."""
    run_id = state.get("run_id") or ""
    segments = segment_dirs(run, run_id)
    offline = [s for s in segments if s.name.startswith("offline-")]
    if _lacks_rows(run, state) and state.get("mode") in ("offline", "online"):
        resend = resume_command(run)
        if state["mode"] == "online":
            return True, resend
        return True, f"{resend} && {sync_command(run, run_id)}"
    if any(not any(s.glob("*.wandb.synced")) for s in offline):
        return True, sync_command(run, run_id)
    unfinished = ("upload_incomplete", "failed", "interrupted")
    if state.get("mode") == "online" and state.get("status") in unfinished:
        online = [s for s in segments if not s.name.startswith("offline-")]
        if not online or any(not any(s.glob("*.wandb.synced")) for s in online):
            return True, sync_command(run, run_id, online=True)
    return False, None


def _lacks_rows(run: RunDir, state: dict[str, Any]) -> bool:
    """Whether W&B may lack rows that a resume sends it from the local log: W&B stopped mid-run
    (failed), or was killed with the training process (interrupted), which also leaves its part
    ending in an unfinished record that stops `wandb sync` until a resume cuts it. A killed run
    with no checkpoint cannot be resumed: `wandb sync` uploads what W&B wrote."""
    status = state.get("status")
    return status == "failed" or (status == "interrupted" and run.has_checkpoints())


def _tracker_state(run: RunDir) -> dict[str, Any]:
    """The tracker's record, where one still "running" after its process was killed (during a
    stuck upload, say) is "interrupted": W&B may not have received all of it."""
    state = run.read_tracker_state()
    if state.get("status") == "running":
        process = run.training_process()
        if process is not None and process[0] != "running":
            return {**state, "status": "interrupted"}
    return state


def run_info(run: RunDir, name: str | None = None) -> RunInfo:
    config = run.read_config()
    state = _tracker_state(run)
    iters, best = _progress(run)
    needs, command = _sync_state(run, state)
    return RunInfo(
        name=name or run.path.name,
        path=str(run.path),
        preset=str(config.get("preset") or (config.get("model_info") or {}).get("preset") or "-"),
        status="killed at start" if run.killed_while_starting() else (run.status() or ("-",))[0],
        iterations=iters,
        best_val_loss=best,
        wandb_mode=state.get("mode") or "-",
        wandb_status=state.get("status") or "-",
        needs_sync=needs,
        sync_command=command,
    )


def list_runs(out_dir: str | Path) -> list[RunInfo]:
    """Every run folder directly below `out_dir`, oldest first, then the trials of each sweep
    folder there (or of `out_dir` itself, a sweep folder), named by their path below it."""
    from hellolondon.search.folder import SweepFolder

    out_dir = Path(out_dir)
    found = [run_info(r) for r in reversed(runs_in(out_dir))]
    inside = sorted(p for p in out_dir.iterdir() if p.is_dir()) if out_dir.is_dir() else []
    for sweep in (SweepFolder(p) for p in (out_dir, *inside)):
        if sweep.exists():
            trials = reversed(runs_in(sweep.trials_dir))
            found += [run_info(r, str(r.path.relative_to(out_dir))) for r in trials]
    return found


def format_runs(runs: list[RunInfo]) -> str:
    header = ("NAME", "PRESET", "STATUS", "ITERS", "BEST VAL", "W&B", "SYNC")
    rows = [
        (
            r.name,
            r.preset,
            r.status,
            "-" if r.iterations is None else f"{r.iterations:,}",
            "-" if r.best_val_loss is None else f"{r.best_val_loss:.4f}",
            r.wandb_mode
            if r.wandb_status in ("-", "finished", "running")
            else f"{r.wandb_mode} ({r.wandb_status})",
            "needed" if r.needs_sync else ("-" if r.wandb_mode in ("-", "disabled") else "done"),
        )
        for r in runs
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    right = {3, 4}  # numbers line up on the right
    lines = [
        "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in (header, *rows)
    ]
    if any(r.status == "killed at start" for r in runs):
        lines += ["", "killed at start: killed before it wrote anything; start it again"]
    aborted = [_aborted_line(r) for r in runs if r.status == "aborted"]
    if aborted:
        lines += ["", *aborted]
    todo = [r for r in runs if r.needs_sync]
    if todo:
        lines += ["", "to upload the runs that W&B has not received yet:"]
        lines += [f"  {r.sync_command}" for r in todo]
    return "\n".join(lines)


def _aborted_line(info: RunInfo) -> str:
    """What an aborted run (a second Ctrl-C) is, and how it goes on: from its last checkpoint,
    as a killed run does."""
    run = RunDir(info.path)
    said = status_words(*(run.status() or ("aborted", "by a second Ctrl-C")))
    then = (
        f"go on from its last checkpoint with: {resume_command(run)}"
        if run.has_checkpoints()
        else "it saved no checkpoint to go on from; train it again"
    )
    return f"{info.name}: {said}; {then}"


def runs_json(runs: list[RunInfo]) -> str:
    return json.dumps([asdict(r) for r in runs], indent=2)
