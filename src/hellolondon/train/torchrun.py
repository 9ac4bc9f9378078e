"""`hellolondon train --gpus N`: check the request, then start torchrun on this machine with
the same arguments, one process per GPU.

Every check runs before any process starts, so a wrong GPU count, a busy port or a batch that
cannot be split is one clear line, not a stack of failing ranks."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hellolondon.errors import UserError
from hellolondon.files import process_alive
from hellolondon.provenance import LAUNCHER_COMMAND, command_line
from hellolondon.rundir import RunDir
from hellolondon.train.signals import ABORTED_BY

# ---------------------------------------------------------------- checks before anything starts


def gpu_names() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def check_gpus(asked: int, device: str, available: int) -> None:
    """`asked` processes on `device` (a train.device value) with `available` CUDA GPUs."""
    if asked < 1:
        raise UserError(f"--gpus must be at least 1, not {asked}")
    if device == "cpu":
        _check_cpu_processes(asked)
        return
    if device.startswith("cuda:") or device == "mps":
        raise UserError(
            f"device={device} names one device, but --gpus gives each process its own; use device=auto"
        )
    if available == 0:
        raise UserError(
            f"--gpus {asked} asks for CUDA GPUs but this machine has none; "
            "add device=cpu to run the processes on the CPU"
        )
    if asked > available:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        limit = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise UserError(
            f"--gpus {asked} asks for more GPUs than the {available} this machine shows{limit}"
        )


CPU_PROCESSES_PER_CPU = 4  # beyond this many ranks per CPU, a setting is taken for a slip


def _check_cpu_processes(asked: int) -> None:
    """Ranks beyond the CPUs only share them (each computes its share on its own threads), and
    thousands of processes would swamp the machine before any could fail: a count far above
    the CPUs is refused."""
    from hellolondon.prepare import usable_cpus

    cpus = usable_cpus()
    if asked > CPU_PROCESSES_PER_CPU * cpus:
        raise UserError(
            f"--gpus {asked} device=cpu starts {asked} training processes for the {cpus} CPUs "
            f"this process may use; give at most {CPU_PROCESSES_PER_CPU * cpus} (--gpus {cpus} "
            "is the fastest: more processes only share the CPUs)"
        )


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def check_port(port: int | None) -> int:
    if port is None:
        return free_port()
    if not 1024 <= port <= 65535:
        raise UserError(f"--master-port {port} is outside 1024-65535")
    if not port_free(port):
        raise UserError(
            f"port {port} is in use; choose another --master-port or leave it out to pick a free one"
        )
    return port


# ---------------------------------------------------------------- train --gpus N


def torchrun_command(
    nproc: int, port: int, hellolondon_args: list[str], debug: bool = False
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run" if debug else "hellolondon.train.torchrun",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        "hellolondon",
        *hellolondon_args,
    ]


def launch_train(
    cfg,
    n: int,
    resume: str | None,
    global_batch: int | None,
    port: int | None,
    debug: bool,
    hashed: dict | None = None,
) -> int:
    """`train --gpus N`: check everything, resolve the config once for N processes, then run
    torchrun with each rank reading that resolved config. `hashed`: the token files' hash
    this process made already (`HashInBackground.note()`), handed to rank 0 so that it need
    not read them again."""
    from hellolondon.train.distributed import collective_timeout_s

    collective_timeout_s()  # a bad HELLOLONDON_DIST_TIMEOUT_S is said here, not by every rank
    port = check_port(port)
    cfg, run_dir = resolve_for(cfg, n, resume, global_batch)
    remove_orphaned_json()
    path = _temporary_json("hellolondon-config-", cfg.to_dict())
    note = _temporary_json("hellolondon-tokens-", hashed) if hashed else None
    cmd = torchrun_command(n, port, _rank_args(path, note, resume, debug), debug)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    env[LAUNCHER_COMMAND] = command_line()  # what the run records as its command
    print("$ " + shlex.join(["torchrun", *cmd[3:]]), flush=True)
    try:
        rc, signum = _run_child(cmd, env)
    except KeyboardInterrupt:  # a second Ctrl-C: torchrun and the ranks were killed at once
        if not _ended_before_the_kill(RunDir(run_dir)):
            _record_abort(RunDir(run_dir))
            raise
        rc, signum = 0, signal.SIGINT  # they had stopped and saved after the first: said so
    finally:
        for made in (path, note):
            if made:
                os.unlink(made)
    return _say_how_it_ended(rc, signum, n, run_dir)


def _rank_args(path: str, note: str | None, resume: str | None, debug: bool) -> list[str]:
    """The `hellolondon` arguments each rank runs: train with the resolved config at `path`
    (and the token files' hash in `note`)."""
    args = ["train", "--resolved-config", path] + (["--resume", resume] if resume else [])
    args += ["--hashed-tokens", note] if note else []
    return (["--debug"] if debug else []) + args


def _say_how_it_ended(rc: int, signum: int | None, n: int, run_dir: Path) -> int:
    """Says how torchrun ended (nothing when training finished) and how to continue; the
    command's exit code."""
    from hellolondon.train.checkpoint import step_dirs

    run = RunDir(run_dir)
    found = step_dirs(run.checkpoints)
    stopped = run.read_summary().get("stop_reason") == "stopped by a signal"
    if rc == 0 and not stopped:
        return 0
    if (rc == 0 or signum) and found and stopped:
        # the ranks stopped as asked (here, or a signal to one rank), after a checkpoint: what
        # one process does, exit code 0 included; torchrun's agent reports our signal as failure
        by = f"by {signal.Signals(signum).name} " if signum else "by a signal to a rank "
        print(
            f"stopped {by}after checkpoint {found[0]}; continue with: hellolondon train "
            f"--gpus {n} --resume {run_dir}",
            flush=True,
        )
        return 0
    where = f"the last complete checkpoint is {found[0]}" if found else "no checkpoint was written"
    again = f"; continue with: hellolondon train --gpus {n} --resume {run_dir}" if found else ""
    print(
        f"error: distributed training {_how_it_ended(rc, signum)}; {where}{again}", file=sys.stderr
    )
    return rc if rc > 0 else 1


def _how_it_ended(rc: int, signum: int | None) -> str:
    """How a torchrun that did not finish ended: "stopped by SIGTERM", say."""
    if signum:
        return f"stopped by {signal.Signals(signum).name}"
    if rc < 0:  # torchrun itself was killed; its ranks had SIGTERM and were waited for
        return f"ended: torchrun was killed by {signal.Signals(-rc).name}"
    return f"failed (torchrun exit code {rc}; the failing rank's error is above)"


TEMPORARY_JSON = ("hellolondon-config-", "hellolondon-tokens-")
ORPHAN_AGE_S = 60  # a younger file is left alone, even of a pid that has just ended


def _temporary_json(prefix: str, data: dict) -> str:
    """A private temporary file holding `data`, for the ranks to read; the caller removes it.
    Its name holds this process's pid (`hellolondon-config-PID-XXXXXXXX.json`), so that once
    this launcher is killed outright (SIGKILL, the out-of-memory killer) and cannot remove it,
    a later launch does (`remove_orphaned_json`)."""
    fd, path = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def remove_orphaned_json() -> list[str]:
    """Remove the temporary files of `_temporary_json` in the temp folder that a
    launcher killed outright left: those named for a process no longer alive and older than
    `ORPHAN_AGE_S`. A live launcher's files stay (its ranks may yet read them), and so does a
    file that cannot be removed (another user's). Returns the names removed."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob("hellolondon-*-*-*.json"):
        pid = _launcher_pid(path.name)
        if pid is None or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > ORPHAN_AGE_S:
                path.unlink()
                removed.append(path.name)
    return sorted(removed)


def _launcher_pid(name: str) -> int | None:
    """The pid in a `_temporary_json` file's name; None for any other name."""
    for prefix in TEMPORARY_JSON:
        pid, _, rest = name.removeprefix(prefix).partition("-")
        if name.startswith(prefix) and pid.isdigit() and rest.endswith(".json"):
            return int(pid)
    return None


def resolve_for(cfg, world: int, resume: str | None, global_batch: int | None):
    """The config resolved for `world` processes, and the run folder the ranks will use, after
    the checks rank 0 would otherwise make late (the launcher's --dry-run makes them too)."""
    from hellolondon.prepare import load_meta
    from hellolondon.train import checkpoint
    from hellolondon.train.resolve import resolve_config

    meta = load_meta(Path(cfg.data.data_dir))
    ckpt, state = checkpoint.find_resumable(resume) if resume else (None, None)
    cfg = resolve_config(
        cfg, world=world, meta=meta, ckpt=ckpt, state=state, global_batch=global_batch,
        log=lambda *_: None,
    )  # fmt: skip
    run = RunDir(Path(cfg.out_dir) / cfg.tracking.run_name)
    home = RunDir.of_checkpoint(ckpt) if ckpt is not None else None
    if home != run:  # a new run folder: it must not exist yet
        run.check_new()
    return cfg, run.path


def _parent_death_signal() -> None:
    """In the child: get SIGTERM if this launcher dies, so torchrun stops its ranks cleanly."""
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux), children first."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def _run_child(cmd: list[str], env: dict[str, str]) -> tuple[int, int | None]:
    """Run torchrun and pass our signals on, so that `--gpus` stops as one process does. A
    Ctrl-C at the terminal reaches torchrun (it is in our process group) by itself; a SIGINT
    sent to us alone (`kill -INT`, an IDE's stop button, `timeout -s INT`), and SIGTERM, are
    passed on. A second SIGINT kills torchrun and every rank at once (no checkpoint) and is
    raised here as the KeyboardInterrupt it is. The ranks' processes are reaped before this
    returns, also when torchrun itself was killed: they then get SIGTERM, save a checkpoint
    and end, and would otherwise write on after the command. Returns (exit code, the first
    signal we got or None)."""
    got: list[int] = []
    linux = sys.platform.startswith("linux")
    if linux:
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned ranks become our children
    preexec = _parent_death_signal if linux else None
    child = subprocess.Popen(cmd, env=env, preexec_fn=preexec)  # noqa: PLW1509 - only a prctl call

    def forward(signum, frame) -> None:
        got.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    def interrupt(signum, frame) -> None:
        got.append(signum)
        if got.count(signal.SIGINT) >= 2:  # torchrun would only send its ranks SIGTERM again
            for pid in [*_descendants(child.pid), child.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif not _foreground():  # not a terminal's Ctrl-C: torchrun has not got it
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    old_term = signal.signal(signal.SIGTERM, forward)
    old_int = signal.signal(signal.SIGINT, interrupt)
    # torchrun's processes as of the last second (pid: start time): once it dies they are
    # orphans; those that ended before are not kept (their pids may be reused since)
    ranks: dict[int, str | None] = {}
    try:
        while True:
            try:
                rc = child.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                ranks = {pid: _started(pid) for pid in _descendants(child.pid)}
        _wait_for(ranks)
        if got.count(signal.SIGINT) >= 2:
            raise KeyboardInterrupt  # said as one process says it: "interrupted", exit 130
        return rc, (got[0] if got else None)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if linux:
            _prctl(36, 0)


def _ended_before_the_kill(run: RunDir) -> bool:
    """Whether the ranks had ended cleanly (their summary written, their record gone) before a
    second Ctrl-C came to kill them: the first had stopped them after a checkpoint."""
    return not run.read_process_record() and bool(run.read_summary())


def _record_abort(run: RunDir) -> None:
    """The ranks were killed before they could say so (a rank that got the second Ctrl-C
    itself may have): the run is recorded as aborted at its last logged step, not left to
    look killed."""
    record = run.read_process_record()
    if record and not record.get("aborted"):
        logged = [r["step"] for r in run.rows() if "train/loss" in r]
        run.mark_aborted(ABORTED_BY, logged[-1] if logged else 0)


def _foreground() -> bool:
    """Whether we are in the foreground process group of our controlling terminal, where its
    Ctrl-C reaches us and torchrun alike. Without a terminal (an IDE, a scheduler) or in the
    background, a SIGINT came from a process, to us alone."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _wait_for(pids: dict[int, str | None]) -> None:
    """Wait until these processes (pid: start time; ranks torchrun left behind) have ended:
    reaped as our children where the subreaper made them so, else watched until they are gone
    (or their pid names a process started since)."""
    for pid, started in pids.items():
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # not ours: another process reaps it
            while started is not None and _started(pid) == started and not _zombie(pid):
                time.sleep(0.1)


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first); [] when it is gone."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def _started(pid: int) -> str | None:
    """When process `pid` started (in clock ticks since boot), None when it is gone: with the
    pid, it names one process even after the pid is reused."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def _zombie(pid: int) -> bool:
    return _stat(pid)[:1] == ["Z"]


# ---------------------------------------------------------------- torchrun, less its traceback


def quiet_torchrun() -> int:
    """torchrun, without the traceback of its own agent, which says nothing about the job: on
    a failed rank its table of failures is what helps (the rank has printed its error), and on
    SIGTERM or Ctrl-C the ranks have checkpointed and nothing failed. `--debug` runs torchrun
    itself. The exit codes are torchrun's."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main()
    except ChildFailedError as failed:
        print(failed.format_msg(), file=sys.stderr)
        return 1
    except SignalException:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(quiet_torchrun())
