"""The W&B side of a run once started, and what is known about a run folder's W&B copies.

The tracker never raises into the training loop: the first W&B failure prints one line and turns
W&B off, and the local metrics log (which holds every row whatever W&B does) carries on.
A resumed run sends W&B only the steps it does not hold yet.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hellolondon.files import read_json, write_json
from hellolondon.provenance import recorded_gpus
from hellolondon.rundir import RunDir
from hellolondon.tracking.secrets import scrub, scrub_row, scrub_text
from hellolondon.tracking.wandb_options import WandbOptions

FINISH_TIMEOUT_S = 120.0  # upload at the end waits this long; the rest stays for `wandb sync`
# W&B's own finish_timeout does not start while its sender is stuck on a request to a server that
# never answers or is unreachable (an alert, a config update, retried): `finish` then waits for
# ever. So W&B's bound is this much inside the tracker's, which holds either way; the tracker
# says why it waits after FINISH_NOTICE_S.
FINISH_GRACE_S = 10.0
FINISH_NOTICE_S = 5.0
# W&B writes its transaction log in blocks, flushed every several seconds: its service is only
# stopped once the log was written after `finish` began (the exit record is then on disk).
FLUSH_WAIT_S = 30.0
# The guide's hardware view: GPU memory "peak and average usage" and utilization over time, so
# the run summary (and W&B's runs table) holds each one's last, highest and mean value.
LAST_STEPS = ".last-steps.json"  # in runs/<run>/wandb/: what W&B's reader found in each part
GPU_SUMMARY = ("gpu/mem_allocated_gb", "gpu/mem_reserved_gb", "gpu/utilization")
LEVELS = {"INFO": "INFO", "WARN": "WARN", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}
Console = Callable[[str], Any]


def wandb_finish_timeout() -> float:
    """W&B's own bound on `finish`, inside the tracker's FINISH_TIMEOUT_S: whichever gives up,
    the run ends within FINISH_TIMEOUT_S."""
    return max(FINISH_TIMEOUT_S - FINISH_GRACE_S, FINISH_TIMEOUT_S / 2)


def quiet_teardown(wandb: Any) -> None:
    """Stop W&B's service after a failure, so that it neither blocks the next start nor prints
    a traceback at exit."""
    with contextlib.suppress(Exception):
        wandb.teardown()


def abandon_service(wandb: Any, log_file: Path | None = None, since: float = 0.0) -> None:
    """Stop W&B's service process without waiting for its uploads, then tear W&B down. Its
    transaction log `log_file` holds every record once written after `since` (when `finish`
    began; W&B writes it before it uploads), so `wandb sync` uploads the rest later; waiting
    instead would hold the process at exit for ever (W&B's exit hook waits for the service)."""
    with contextlib.suppress(Exception, KeyboardInterrupt):
        deadline = time.monotonic() + FLUSH_WAIT_S
        while log_file is not None and time.monotonic() < deadline:
            if log_file.stat().st_mtime > since:
                break
            time.sleep(0.2)
    with contextlib.suppress(Exception):  # the service of the `wandb` given (a stand-in: none)
        process = wandb.sdk.wandb_setup._singleton._connection._proc._process  # a Popen
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    done = threading.Thread(target=quiet_teardown, args=(wandb,), daemon=True)
    done.start()
    done.join(10)


class WandbTracker:
    """One W&B run. Never raises into the loop: the first W&B failure prints one line and
    turns it off, and the local log carries on."""

    def __init__(
        self,
        wandb: Any,
        run: Any,
        opts: WandbOptions,
        mode: str,
        why: str,
        rundir: RunDir,
        console: Console,
    ) -> None:
        self.wandb, self.run, self.opts = wandb, run, opts
        self.mode, self.why = mode, why
        self.rundir, self.console = rundir, console
        self.run_id: str | None = run.id
        self.skip_through = -1  # steps W&B already holds from before a restart
        self.local_through = -1  # the last step of the local log when the run resumed
        self.held_before = -1  # the last step W&B held when the run resumed
        self.replayed: tuple[int, int] | None = None  # first and last step re-sent from the log
        self.status = "running"

    # ---- start

    def begin(self, resumed: bool, started_s: float) -> None:
        self._call(self._define_metrics)
        if self.run is None:
            return
        if resumed:
            self.skip_through = self.held_before = self._last_step_held()
            self._replay_local_rows()
        self._save_state()
        self.console(self._start_line(resumed, started_s))

    def _define_metrics(self) -> None:
        # The W&B guide's panels plot against iterations: train/* (and gpu/*) on train/iter,
        # eval/* on eval/iter, so a train row and an eval row can share a step.
        run = self.run
        run.define_metric("train/iter")
        run.define_metric("train/*", step_metric="train/iter")
        run.define_metric("gpu/*", step_metric="train/iter")
        for name in GPU_SUMMARY:
            run.define_metric(name, step_metric="train/iter", summary="last,max,mean")
        run.define_metric("eval/iter")
        run.define_metric("eval/*", step_metric="eval/iter")

    def _last_step_held(self) -> int:
        """The last step this run already has in W&B: the server's word online, the earlier
        local parts offline. Rows up to it are not sent again (the local log has them)."""
        if self.mode == "online":
            start = int(getattr(self.run, "starting_step", 0) or 0)
            return start - 1
        earlier = [d for d in segment_dirs(self.rundir, self.run_id or "") if d != self.sync_dir]
        # each part logs only steps past all the parts before it, so the newest part with a row
        # holds the last step. W&B's reader costs a second or so a part, and a part never changes
        # once its process has ended, so what it found is kept: each part is read once
        for segment in reversed(earlier):
            step = _last_step_known(segment, self.rundir.wandb_dir / LAST_STEPS)
            if step is not None:
                return step
        return -1

    def _replay_local_rows(self) -> None:
        """Send the rows that the local log has and W&B lost (a hard kill drops W&B's unwritten
        tail, which can reach back before the checkpoint the loop restarts from)."""
        sent: list[int] = []
        for row in self.rundir.rows():
            step = row.get("step")
            if isinstance(step, int):
                self.local_through = max(self.local_through, step)
            if isinstance(step, int) and step > self.skip_through and self.run is not None:
                values = {k: _number(v) for k, v in row.items() if k not in ("step", "time")}
                self._call(lambda v=values, s=step: self.run.log(v, step=s))
                sent.append(step)
        if sent:
            self.replayed = (min(sent), max(sent))
            self.skip_through = max(sent)

    @property
    def sync_dir(self) -> Path | None:
        with contextlib.suppress(Exception):
            return Path(self.run.settings.sync_dir).resolve()
        return None

    @property
    def sync_command(self) -> str:
        return sync_command(self.rundir, self.run_id or "", online=self.mode == "online")

    @property
    def url(self) -> str | None:
        if self.mode != "online" or self.run is None:
            return None
        with contextlib.suppress(Exception):
            return self.run.url
        return None

    def _start_line(self, resumed: bool, started_s: float) -> str:
        verb = "Resuming" if resumed else "Syncing"
        line = f"wandb: {verb} run {self.opts.name} (mode: {self.mode}"
        if self.mode == "online":
            where = (
                f"{self.opts.entity}/{self.opts.project}" if self.opts.entity else self.opts.project
            )
            line += f", project {where}) {self.url or ''}".rstrip()
        else:
            line += f": {self.why}); upload later with: {self.sync_command}"
        if resumed:
            line += f" [{self._held_words()}]"
        if self.opts.debug:
            line += (
                f" [started in {started_s:.1f} s; W&B logs in {show_path(self.rundir.wandb_dir)}]"
            )
        return line

    def _held_words(self) -> str:
        """What W&B held of this run when it resumed, and what the local log sent it again."""
        held = (
            f"W&B held steps up to {self.held_before}"
            if self.held_before >= 0
            else "W&B held none of this run's steps"
        )
        if self.replayed is not None:
            first, last = self.replayed
            held += f"; steps {first}-{last} re-sent from the local log"
        return held

    # ---- the loop's calls

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        if step <= self.local_through:
            # new at a step the run had logged before it resumed: the evaluation a stop cut
            # short. W&B takes no step it has passed, so it goes at the next one; its own
            # eval/iter puts it in place on the charts
            step = max(step, self.skip_through + 1)
        elif step <= self.skip_through:
            return  # logged again after a restart: W&B holds it
        clean = {k: v for k, v in scrub_row(row).items() if v is not None}
        self._call(lambda: self.run.log(clean, step=int(step)))

    def alert(
        self, title: str, text: str, level: str = "WARN", *, step: int, rule: str = ""
    ) -> None:
        if self.run is None:
            return
        body = scrub_text(f"{text} (iteration {step})")
        alert_level = getattr(self.wandb.AlertLevel, LEVELS.get(level.upper(), "WARN"))
        self._call(
            lambda: self.run.alert(
                title=scrub_text(title),
                text=body,
                level=alert_level,
                wait_duration=self.opts.alert_wait_s,
            )
        )

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        values = scrub(values)
        clean = {k: v for k, v in values.items() if v is not None}
        gone = [k for k, v in values.items() if v is None]  # cleared, as in summary.json

        def update() -> None:
            self.run.summary.update(clean)
            for key in gone:
                del self.run.summary[key]  # a key W&B does not hold is no error

        self._call(update)

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None:
        """A checkpoint folder (or file) as a versioned `model` Artifact, when asked for."""
        if self.run is None or not self.opts.log_artifacts:
            return
        path = Path(path)
        try:
            artifact = self.wandb.Artifact(
                f"{_artifact_name(self.opts.name)}-model",
                type="model",
                metadata=_checkpoint_meta(path, self.rundir),
            )
            if path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=list(aliases))
        except (ConnectionError, BrokenPipeError) as exc:
            self._lost(exc)
        except Exception as exc:  # a missing file or a full disk: the next checkpoint may work
            self.console(
                f"wandb: checkpoint {path.name} not logged as an artifact ({type(exc).__name__}: {scrub_text(str(exc))[:200]})"
            )

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            self._save_state()
            return
        run, self.run = self.run, None
        outcome = self._bounded_finish(run, exit_code)
        if outcome is None:
            self.status = "finished"
        elif isinstance(outcome, (TimeoutError, KeyboardInterrupt)):
            self.status = "upload_incomplete"
            waited = (
                "was stopped"
                if isinstance(outcome, KeyboardInterrupt)
                else f"did not finish within {FINISH_TIMEOUT_S:.0f} s"
            )
            self.console(f"wandb: upload {waited}; the rest is on disk: {self.sync_command}")
        else:
            self.run = run
            self._lost(outcome)
            return
        self._save_state()
        if self.mode == "offline":
            self.console(
                f"wandb: run {self.opts.name} saved offline; upload it with: {self.sync_command}"
            )

    def _bounded_finish(self, run: Any, exit_code: int) -> BaseException | None:
        """`run.finish` within FINISH_TIMEOUT_S, whatever the server does: None
        when it finished, else what stopped it (TimeoutError, a Ctrl-C, an error)."""
        outcome: list[BaseException | None] = []

        def target() -> None:
            try:
                run.finish(exit_code=exit_code)
                outcome.append(None)
            except BaseException as exc:  # reported by the caller, never as a thread traceback
                outcome.append(exc)

        worker = threading.Thread(target=target, name="wandb-finish", daemon=True)
        since, log_file = time.time(), None
        with contextlib.suppress(Exception):
            log_file = Path(run.settings.sync_dir) / f"run-{self.run_id}.wandb"
        try:
            worker.start()
            worker.join(FINISH_NOTICE_S)
            if worker.is_alive():
                self.console(
                    f"wandb: still uploading; waiting up to {FINISH_TIMEOUT_S:.0f} s "
                    f"(Ctrl-C leaves the rest for later: {self.sync_command})"
                )
                worker.join(FINISH_TIMEOUT_S - FINISH_NOTICE_S)
        except KeyboardInterrupt as exc:
            abandon_service(self.wandb, log_file, since)
            return exc
        if worker.is_alive():
            abandon_service(self.wandb, log_file, since)
            return TimeoutError("W&B's finish did not return")
        return outcome[0] if outcome else None

    # ---- failures

    def _call(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        if self.run is None:
            return
        self.run = None
        self.status = "failed"
        quiet_teardown(self.wandb)
        self._save_state()
        upload = f", then: {self.sync_command}" if self.mode == "offline" else ""
        self.console(
            f"wandb: W&B stopped working ({type(exc).__name__}: {scrub_text(str(exc))[:200]}); "
            f"training goes on and every row is in {show_path(self.rundir.metrics_file)}. W&B may "
            f"lack the latest rows: once this run has ended, {resume_command(self.rundir)} "
            f"sends it those from that log{upload}"
        )

    def _save_state(self) -> None:
        self.rundir.write_tracker_state(
            {
                "run_id": self.run_id,
                "name": self.opts.name,
                "mode": self.mode,
                "reason": self.why,
                "project": self.opts.project,
                "entity": self.opts.entity,
                "url": self.url
                if self.status == "running"
                else self.rundir.read_tracker_state().get("url"),
                "status": self.status,
                "sync_command": self.sync_command
                if self.mode == "offline" or self.status != "finished"
                else None,
            },
        )


# ---------------------------------------------------------------------------- local run folders


def segment_dirs(run: RunDir, run_id: str) -> list[Path]:
    """W&B's folders for this run id (one per start: the first, each resume, a failed online
    try), oldest first."""
    root = run.wandb_dir
    if not run_id or not root.is_dir():
        return []
    found = [
        d.resolve() for d in root.glob(f"*run-*-{run_id}") if (d / f"run-{run_id}.wandb").exists()
    ]
    return sorted(found, key=lambda d: d.name.split("run-", 1)[1])


def is_synced(segment: Path) -> bool:
    """`wandb sync` leaves `run-<id>.wandb.synced` beside the file it uploaded."""
    return any(segment.glob("*.wandb.synced"))


def sync_command(run: RunDir, run_id: str, online: bool = False) -> str:
    """The command that uploads this run's W&B folders: the offline ones, or those of an online
    run whose upload did not finish (`wandb sync` skips online folders unless told)."""
    where = shlex.quote(show_path(run.wandb_dir))
    if online:
        return f"wandb sync --include-online {where}/run-*-{run_id}"
    return f"wandb sync {where}/offline-run-*-{run_id}"


def _last_step_known(segment: Path, cache: Path) -> int | None:
    """`last_step` of a part of an ended process, from `cache` ({folder: [bytes of its .wandb
    file, last step]}) when it was read before at that size. What is read is written there at
    once: a start killed halfway through the parts keeps what it had read."""
    size = sum(f.stat().st_size for f in segment.glob("*.wandb"))
    known = read_json(cache)
    seen = known.get(segment.name)
    if isinstance(seen, list) and len(seen) == 2 and seen[0] == size:
        return seen[1]
    step = last_step(segment)
    with contextlib.suppress(OSError):
        write_json(cache, {**known, segment.name: [size, step]})
    return step


def last_step(segment: Path) -> int | None:
    """The last step W&B wrote in one folder, read with W&B's own reader (`wandb leet inspect`).
    A run killed hard loses W&B's unwritten tail, so this can be below what the loop logged."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(segment)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        step = json.loads(out.stdout).get("step")
    except (OSError, ValueError, subprocess.SubprocessError, AttributeError):
        return None
    return int(step) if isinstance(step, (int, float)) else None


def _number(value: Any) -> Any:
    """The JSONL log writes NaN and infinities as text; W&B takes them as floats."""
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def _artifact_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def resume_command(run: RunDir) -> str:
    """The command that goes on with a run. It also sends W&B the rows it lacks: a resume
    replays the local log past what W&B holds, and for a run that had ended trains no step.
    A run that `train --gpus N` started (or last resumed) goes on with `--gpus N` too, as the
    launcher's own line says: without it the run would continue in one process."""
    gpus = recorded_gpus(run.read_config())
    launch = f"--gpus {gpus} " if gpus else ""
    return f"hellolondon train {launch}--resume {shlex.quote(show_path(run.path))}"


def _checkpoint_meta(path: Path, run: RunDir) -> dict[str, Any]:
    from hellolondon.train.checkpoint import counters

    where = str(path)
    with contextlib.suppress(ValueError):  # the place in the run folder, not this machine's path
        where = str(path.resolve().relative_to(run.path.resolve()))
    meta: dict[str, Any] = {"path": where}
    with contextlib.suppress(Exception):  # an unreadable state.json: the artifact all the same
        meta.update({k: v for k, v in counters(path).items() if v is not None})
    return meta


def show_path(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    return str(path)
