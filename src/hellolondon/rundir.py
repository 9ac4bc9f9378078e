"""The run folder: the one module that knows its layout. Everyone else asks it.

    runs/<run>/
        config.json      the settings as used and the facts of the run (secrets removed)
        metrics.jsonl    every logged row with its step: the source of truth for reports
        events.jsonl     health findings and alerts, each with its step
        summary.json     the run's outcome, written when training ends
        samples.txt      text sampled during training
        tokenizer/       a copy of the tokenizer the run was trained with
        tracking.json    the W&B side: run id, mode, status, sync command
        process.json     the training process while it runs (pid, host), or the error it died
                         of, or the step a second Ctrl-C aborted it at
        process-rankN.json  under torchrun, the error a rank other than 0 died of
        checkpoints/     step-NNNNNN/, latest, best/ (their layout: `train/checkpoint`)
        eval/            evaluation reports, step-NNNNNN.json and .md
        report/          report.png and report.html
        wandb/           W&B's own folder

The JSONL logs are appended one flushed line per row, so a run killed mid-write loses at most
the line being written: readers skip a cut-short last line, and a writer that reopens a log
first cuts such a line off so that the next row starts on a line of its own.
"""

from __future__ import annotations

import filecmp
import json
import math
import os
import re
import shutil
import socket
import stat
import time
from pathlib import Path
from typing import Any, TextIO

from hellolondon.errors import UserError
from hellolondon.files import (
    atomic_write,
    exclusive_lock,
    process_alive,
    read_json,
    unwritable,
    write_json,
)

CONFIG = "config.json"
# the parts of config.json that training writes as JSON objects and readers take as such
# (`reproduce` checks its own record part by part)
CONFIG_SECTIONS = (
    "model", "train", "data", "tracking", "monitor", "model_info", "data_info", "hardware",
)  # fmt: skip
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
# the summary keys of `hellolondon eval`'s report (training's own eval/val_loss ... are not)
EVAL_REPORT_KEYS = ("eval/val_bpb", "eval/heldout_", "eval/probe_", "eval/gen_")
SAMPLES = "samples.txt"
TOKENIZER = "tokenizer"
TRACKER_STATE = "tracking.json"
PROCESS = "process.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
REPORT = "report"
WANDB = "wandb"
# any makes a folder a run folder: process.json alone is a run cut off (or still) starting
MARKERS = (CONFIG, METRICS, TRACKER_STATE, CHECKPOINTS, PROCESS)


class RunDir:
    """One run folder: its paths, and reading and writing the files in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    name = property(lambda self: self.path.resolve().name)
    config_file = property(lambda self: self.path / CONFIG)
    metrics_file = property(lambda self: self.path / METRICS)
    events_file = property(lambda self: self.path / EVENTS)
    summary_file = property(lambda self: self.path / SUMMARY)
    samples_file = property(lambda self: self.path / SAMPLES)
    tokenizer_dir = property(lambda self: self.path / TOKENIZER)
    tracker_state_file = property(lambda self: self.path / TRACKER_STATE)
    process_file = property(lambda self: self.path / PROCESS)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    eval_dir = property(lambda self: self.path / EVAL)
    report_dir = property(lambda self: self.path / REPORT)
    wandb_dir = property(lambda self: self.path / WANDB)

    # ---- finding run folders

    @staticmethod
    def is_run(path: str | Path) -> bool:
        path = Path(path)
        return path.is_dir() and any((path / f).exists() for f in MARKERS)

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path) -> RunDir | None:
        """The run folder that holds a checkpoint folder, or None for one kept elsewhere."""
        ckpt = Path(ckpt).resolve()
        run = ckpt.parent.parent
        return cls(run) if ckpt.parent.name == CHECKPOINTS and cls.is_run(run) else None

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """The run folder at `path`, or a UserError that says what `path` is instead."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path} does not exist; give a run folder such as runs/<run-name>")
        if not path.is_dir():
            raise UserError(f"{path} is a file, not a run folder; give the folder with {METRICS}")
        if cls.is_run(path):
            return cls(path)
        if (owner := cls.of_checkpoint(path)) is not None:
            raise UserError(f"{path} is a checkpoint of a run; give the run folder: {owner.path}")
        if (error := holds_runs(path)) is not None:
            raise error
        raise UserError(f"{path} is not a run folder: it has no {METRICS} (training writes one)")

    @classmethod
    def create(cls, out_dir: str | Path, name: str) -> RunDir:
        """A new, empty, writable run folder `out_dir/name`."""
        run = cls(Path(out_dir) / name)
        run.check_new()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            run._claim()
        except OSError as exc:
            raise UserError(
                f"cannot write the run folder {run.path} ({exc.strerror}); choose a writable out_dir"
            ) from None
        return run

    def _claim(self) -> None:
        """Write this process's record in one step that fails where another process's record
        already is: two runs started at once under one name (the same --run-name, or default
        names of the same second) would otherwise both pass `check_new` and share one folder.
        A record left by a start that died before writing anything else is taken over."""
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                fd = os.open(self.process_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._claimed_elsewhere():
                    raise UserError(
                        f"run folder {self.path} was just taken by another command starting a "
                        "run of the same name; choose another --run-name"
                    ) from None
                self.process_file.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(record + "\n")
            return

    def _claimed_elsewhere(self) -> bool:
        if self._own_record():  # an earlier start in this very process (a library caller's)
            return False
        found = self.training_process()
        return found is None or found[0] == "running"  # None: another machine's, or unreadable

    def check_new(self) -> None:
        """Refuse to start a run in a folder that already holds one (or is being started), or
        that cannot be written: said before the model is built, not after."""
        if self.path.exists():
            self._check_not_taken()
        self._check_writable()

    def _check_writable(self) -> None:
        why = unwritable(self.path)
        if why:
            raise UserError(
                f"cannot write the run folder {self.path} ({why}); choose a writable out_dir"
            )

    def _check_not_taken(self) -> None:
        if not self.path.is_dir():
            raise UserError(
                f"{self.path} is a file, not a folder, so the run folder cannot go there; choose "
                "another --run-name or move the file"
            )
        held = [p.name for p in self.path.iterdir()]
        if not (any(name != PROCESS for name in held) or (held and self._claimed_elsewhere())):
            return
        if self.has_checkpoints():
            raise UserError(
                f"run folder {self.path} already exists; choose another --run-name or resume it "
                f"with `hellolondon train --resume {self.path}`"
            )
        raise UserError(
            f"run folder {self.path} already exists, and holds no checkpoint to resume (its run "
            "stopped before the first save, or is starting now); choose another --run-name, or "
            "remove the folder"
        )

    # ---- the small JSON files

    def read_config(self) -> dict[str, Any]:
        """config.json; {} when missing, unreadable or not a saved config (a section such as
        `train` that is not an object: hand-edited, or another program's file)."""
        config = read_json(self.config_file)
        return config if _sections_are_objects(config) else {}

    def config_problem(self) -> str:
        """What keeps config.json from being read, in a few words ("is missing", "is not valid
        JSON (truncated or damaged)", "has a `train` that is not an object"); "" when it reads."""
        if not self.config_file.is_file():
            return "is missing"
        try:
            config = json.loads(self.config_file.read_bytes())
        except ValueError:  # UnicodeDecodeError included
            return "is not valid JSON (truncated or damaged)"
        if not isinstance(config, dict):
            return "is not a JSON object"
        bad = [k for k in CONFIG_SECTIONS if not isinstance(config.get(k, {}), dict)]
        return f"has a `{bad[0]}` that is not an object" if bad else ""

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_file, config)

    def read_summary(self) -> dict[str, Any]:
        return read_json(self.summary_file)

    def update_summary(self, values: dict[str, Any]) -> None:
        write_json(self.summary_file, {**self.read_summary(), **jsonable(values)})

    def drop_eval_report_after(self, step: int) -> list[str]:
        """Clear from the summary the evaluation report of a step after `step` (weights of a
        line that a resume from an older checkpoint abandoned); returns the keys cleared."""
        summary = self.read_summary()
        at = summary.get("eval/iter")
        if not isinstance(at, int | float) or at <= step:
            return []
        keys = [k for k in summary if k == "eval/iter" or k.startswith(EVAL_REPORT_KEYS)]
        self.update_summary(dict.fromkeys(keys))
        return keys

    def read_tracker_state(self) -> dict[str, Any]:
        return read_json(self.tracker_state_file)

    def write_tracker_state(self, values: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.tracker_state_file, values)

    # ---- the training process: is it running, was it killed, did it fail

    def mark_training(self) -> None:
        write_json(self.process_file, {"pid": os.getpid(), "host": socket.gethostname()})
        for old in self.path.glob("process-rank*.json"):  # an earlier start's
            old.unlink(missing_ok=True)

    def mark_rank_failed(self, rank: int, step: int, error: str, message: str) -> None:
        """A rank other than 0 records the error it died of, for rank 0 to name: rank 0 itself
        only sees its peer's connection close. Not on a machine that does not see the folder."""
        if self.path.is_dir():
            record = {"rank": rank, "step": step, "error": error, "message": message}
            write_json(self.path / f"process-rank{rank}.json", record | {"time": time.time()})

    def rank_failures(self) -> list[dict[str, Any]]:
        """What `mark_rank_failed` recorded, the first failure first."""
        found = [read_json(p) for p in self.path.glob("process-rank*.json")]
        return sorted((f for f in found if "error" in f), key=lambda f: f.get("time", 0))

    def mark_failed(self, error: str) -> None:
        write_json(self.process_file, {**read_json(self.process_file), "failed": error})

    def mark_aborted(self, how: str, step: int) -> None:
        """Training was aborted (a second Ctrl-C) at `step`, before it could save: said as
        such, not left to look killed. Only over this run's own record: one that ended
        cleanly has none, and is not aborted."""
        record = read_json(self.process_file)
        if record:
            detail = f"by {how} at step {step}"
            write_json(self.process_file, record | {"aborted": detail, "aborted_at_step": step})

    def mark_ended(self) -> None:
        self.process_file.unlink(missing_ok=True)

    def claim_to_resume(self) -> dict[str, Any]:
        """Record this process as the one training the run, refused while another live process
        trains it: both would write its checkpoints and logs, and prune each other's
        checkpoints. The check and the record are one step under a lock, so two resumes started
        at once (a job requeued while the old one still saves, a command run twice) cannot
        both pass the check. Returns the record it replaced (for `restore_record`)."""

        def refuse(pid: str) -> UserError:
            return UserError(
                f"run {self.path} is being resumed now (process {pid}); wait for it to end or "
                "stop it before resuming"
            )

        with exclusive_lock(self.path / ".resume.lock", refuse):
            found = None if self._own_record() else self.training_process()
            if found is not None and found[0] == "running":
                raise UserError(
                    f"run {self.path} is being trained now ({found[1]}); wait for it to end or "
                    "stop it (Ctrl-C, or kill that process) before resuming"
                )
            replaced = read_json(self.process_file)
            self.mark_training()
        return replaced

    def restore_record(self, record: dict[str, Any]) -> None:
        """Put back the record `claim_to_resume` replaced: a start that stopped before training
        leaves the run as it found it (finished, failed, killed), not "killed"."""
        if record:
            write_json(self.process_file, record)
        else:
            self.process_file.unlink(missing_ok=True)

    def check_config_readable(self) -> None:
        """Refuse to continue a run whose config.json is there but unreadable (cut short by a
        full disk, say): the resume rewrites it, and the record of the run's first start in it
        (command, code, data) would be lost without a word."""
        if self.config_file.exists() and not self.read_config():
            raise UserError(
                f"{self.config_file} is truncated or corrupt (not a JSON object); it records how "
                "the run first started, and resuming rewrites it: restore it from a backup, or "
                "move it away to resume without that record"
            )

    def _own_record(self) -> bool:
        record = read_json(self.process_file)
        return record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()

    def read_process_record(self) -> dict[str, Any]:
        """The training process's record (process.json), {} without one."""
        return read_json(self.process_file)

    def training_process(self, record: dict[str, Any] | None = None) -> tuple[str, str] | None:
        """("running" | "killed" | "failed" | "aborted", detail) while a training process's
        record is here, i.e. from its start until it ends cleanly; None without one, or when it
        was written on another machine (its process cannot be looked up from here). "aborted":
        a second Ctrl-C ended it before it saved ("by a second Ctrl-C at step 12"). `record`:
        process.json where the caller has read it already."""
        record = self.read_process_record() if record is None else record
        if not record:
            return None
        if record.get("failed"):
            return "failed", str(record["failed"])
        if record.get("aborted"):
            return "aborted", str(record["aborted"])
        if record.get("host") != socket.gethostname():
            return None
        pid = int(record.get("pid", 0))
        return (
            ("running", f"process {pid}")
            if process_alive(pid)
            else ("killed", f"process {pid} is gone")
        )

    def gone_process(self, record: dict[str, Any] | None = None) -> int | None:
        """The id of the training process recorded as running on this machine when it is no
        longer alive: killed (SIGKILL, the out-of-memory killer) or dead of the error its
        record names. None while it runs, once it ended cleanly (no record), or when the record
        is another machine's (its process cannot be looked up from here). `record`: as for
        `training_process`."""
        record = self.read_process_record() if record is None else record
        if not record or record.get("host") != socket.gethostname():
            return None
        pid = int(record.get("pid", 0))
        return None if process_alive(pid) else pid

    def killed_while_starting(self) -> bool:
        """Whether the run's process died before it wrote anything but its record (config.json
        comes first, once the model is built): there is nothing to go on from or to keep."""
        if [p.name for p in self.path.iterdir()] != [PROCESS]:
            return False
        found = self.training_process()
        return found is not None and found[0] == "killed"

    def has_checkpoints(self) -> bool:
        """Whether the run saved anything to resume from."""
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def status(self) -> tuple[str, str] | None:
        """How training stands: the process's record ("running", "killed", "failed", "aborted"
        and a detail), else the summary of a run that ended ("finished", or "stopped" and why);
        None when neither says (a run from another machine still training, say)."""
        process = self.training_process()
        if process is not None:
            return process
        summary = self.read_summary()
        if not summary:
            return None
        if summary.get("stopped_early"):
            return "stopped", str(summary.get("stop_reason") or "")
        return "finished", ""

    @property
    def modified(self) -> float:
        """When the run was started (its config written), for ordering runs."""
        for f in (self.config_file, self.path):
            if f.exists():
                return f.stat().st_mtime
        return 0.0

    # ---- the JSONL logs

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_file)

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_file)

    def metrics_log(self) -> JsonlLog:
        return JsonlLog(self.metrics_file)

    def events_log(self) -> JsonlLog:
        return JsonlLog(self.events_file)

    def cut_logs_after(self, step: int) -> None:
        """Drop the rows, events and samples logged after `step` (a resumed run logs them
        again)."""
        for path in (self.metrics_file, self.events_file):
            keep_through(path, step)
        self._cut_samples_after(step)

    # ---- the rest

    def append_sample(self, step: int, text: str) -> None:
        with open(self.samples_file, "a", encoding="utf-8") as f:
            f.write(f"{_SAMPLE_HEAD}{step}\n{text}\n\n")

    def _cut_samples_after(self, step: int) -> None:
        if not self.samples_file.is_file():
            return
        text = self.samples_file.read_text(encoding="utf-8", errors="replace")
        for head in re.finditer(rf"(?m)^{_SAMPLE_HEAD}(\d+)$", text):  # in step order
            if int(head.group(1)) > step:
                atomic_write(self.samples_file, text[: head.start()])
                return

    def copy_tokenizer(self, src: str | Path | None) -> None:
        """Keep a copy of the run's tokenizer beside it (once), so the run is self-contained.
        Copied under a temporary name and renamed: a copy cut short is never taken for one."""
        if not src or not (Path(src) / "tokenizer.json").is_file():
            return
        kept = self.tokenizer_dir / "tokenizer.json"
        if kept.is_file() and filecmp.cmp(kept, Path(src) / "tokenizer.json", shallow=False):
            return  # a copy that differs (damaged, cut short) is made again from `src`
        tmp = self.path / f".tokenizer.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(self.tokenizer_dir, ignore_errors=True)  # what a killed copy left
        os.replace(tmp, self.tokenizer_dir)


_SAMPLE_HEAD = "=== iteration "  # each sample in samples.txt starts with it, then its step


def status_words(state: str, detail: str) -> str:
    """A run's state and its detail (`RunDir.status`) in the words every reader shows:
    "aborted by a second Ctrl-C at step 12", "failed: OutOfMemoryError at step 40",
    "killed: process 12 is gone", "finished"."""
    if state == "aborted":  # its detail reads on from the word: "by a second Ctrl-C ..."
        return f"aborted {detail}".rstrip()
    return f"{state}: {detail}" if detail else state


def holds_runs(path: Path) -> UserError | None:
    """Why `path`, a folder of runs (`runs/`) or a sweep's folder, is not a run itself, naming
    some runs in it; None for any other folder."""
    from hellolondon.search.folder import SweepFolder

    sweep = SweepFolder(path)
    if sweep.exists():
        trials = runs_in(sweep.trials_dir)
        return UserError(
            f"{path} is a sweep folder, not a run folder; give its trials"
            + (f", such as: {_some_runs(trials)}" if trials else "; it has none yet")
        )
    inside = runs_in(path)
    if inside:
        return UserError(
            f"{path} holds run folders, it is not one; give a run folder in it, such as: "
            + _some_runs(inside)
        )
    return None


def _some_runs(runs: list[RunDir]) -> str:
    return ", ".join(str(r.path) for r in runs[:3]) + (" ..." if len(runs) > 3 else "")


def runs_in(path: str | Path) -> list[RunDir]:
    """The run folders directly inside `path` (a `runs/` folder), newest first."""
    path = Path(path)
    found = [RunDir(p) for p in path.iterdir() if RunDir.is_run(p)] if path.is_dir() else []
    return sorted(found, key=lambda r: (r.modified, r.path.name), reverse=True)


def tokenizer_dir_of(ckpt: str | Path) -> Path:
    """The tokenizer saved with a checkpoint: in the folder itself or in its run folder."""
    ckpt = Path(ckpt)
    run = RunDir.of_checkpoint(ckpt)
    candidates = [ckpt / TOKENIZER] + ([run.tokenizer_dir] if run else [])
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file():
            return candidate
    where = run.tokenizer_dir if run else ckpt / TOKENIZER
    raise UserError(
        f"checkpoint {ckpt} has no tokenizer beside it (looked for {where}); copy the "
        "tokenizer folder there"
    )


# ---------------------------------------------------------------------------- JSONL


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: such floats are kept as text ("nan", "inf")."""
    return {
        k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()
    }


def _sections_are_objects(config: dict[str, Any]) -> bool:
    return all(isinstance(config.get(key, {}), dict) for key in CONFIG_SECTIONS)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete JSON-object lines of a file; an empty list when it does not exist.
    A line that does not parse is skipped: only the last can be cut short by a kill."""
    rows, _ = _parse(Path(path).read_bytes() if Path(path).is_file() else b"")
    return rows


def _parse(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """(rows of the complete lines in `data`, bytes those lines take)."""
    complete = data[: data.rfind(b"\n") + 1]
    rows = []
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, len(complete)


def cut_short(path: str | Path) -> bool:
    """True when the file's last line has no newline: the writer was killed mid-line."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except OSError:
        return False


def keep_through(path: Path, step: int) -> int:
    """Rewrite a JSONL log without the rows after `step` and without a cut-short last line;
    returns how many rows were dropped. Atomic: a crash here loses nothing."""
    if not path.is_file():
        return 0
    rows = read_jsonl(path)
    keep = [r for r in rows if _step(r) <= step]
    if len(keep) < len(rows) or cut_short(path):
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep))
    return len(rows) - len(keep)


def _step(row: dict[str, Any]) -> int:
    step = row.get("step")
    return int(step) if isinstance(step, (int, float)) else 0


class JsonlLog:
    """Appends rows to a JSONL log, one flushed line each. Opening it first cuts off a last
    line left half-written by a killed run, which would otherwise swallow the next row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if cut_short(path):
            data = path.read_bytes()
            atomic_write(path, data[: data.rfind(b"\n") + 1])
        self._f: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, row: dict[str, Any]) -> None:
        if self._f.closed:  # a failure after the run closed its logs is still recorded
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._f.write(json.dumps(jsonable(row)) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


class Tail:
    """The complete rows appended to a JSONL log since the last call (a line still being
    written waits for the next call)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """(new rows, restarted): restarted when the file shrank (a resume rewrote it)."""
        try:
            info = self.path.stat()
        except OSError:
            return [], False
        if not stat.S_ISREG(info.st_mode):  # a folder, or a pipe that would block the read
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a plain file"
            raise UserError(
                f"{self.path} is {what}, not a file of rows; move it away (training writes "
                "this log as a file)"
            )
        size = info.st_size
        restarted = size < self.offset
        if restarted:
            self.offset = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            rows, used = _parse(f.read())
        self.offset += used
        return rows, restarted


def now() -> float:
    return round(time.time(), 3)
