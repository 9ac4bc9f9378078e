"""`hellolondon train --gpus N`: check the request, then start torchrun on this machine with
the same arguments, one process per GPU.

Every check runs before any process starts, so a wrong GPU count, a busy port or a batch that
cannot be split is one clear line, not a stack of failing ranks."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from hellolondon.errors import UserError

LAUNCH_FLAGS = ("gpus", "master_port")  # meant for this process only, never passed to ranks


def add_launch_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "several GPUs on this machine (see docs/distributed.md for more nodes)"
    )
    g.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="start N processes with torchrun, one per GPU "
        "(add device=cpu to try it on CPU processes with gloo)",
    )
    g.add_argument(
        "--master-port",
        type=int,
        metavar="PORT",
        help="rendezvous port for --gpus (default: a free one)",
    )
    g.add_argument(
        "--global-batch",
        type=int,
        metavar="SEQS",
        help="sequences per optimizer step over all "
        "processes; sets batch_size and grad_accum for the world size (which must divide it)",
    )


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


def apply_global_batch(train, global_batch: int | None, world: int) -> None:
    """--global-batch G: split G sequences over `world` processes, keeping the configured
    batch_size as the most one process holds and accumulating the rest."""
    if global_batch is None:
        return
    from hellolondon.train.distributed import split_batch

    if global_batch < 1:
        raise UserError("--global-batch must be at least 1")
    train.batch_size, train.grad_accum = split_batch(
        global_batch, world, max_batch=train.batch_size
    )


# ---------------------------------------------------------------- train --gpus N


def train_argv(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The `train` arguments back as a list (without the launch-only flags), for each rank."""
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in LAUNCH_FLAGS or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        out += [flag] if value is True else [flag, str(value)]
    return out + list(getattr(args, "overrides", []))


def torchrun_command(nproc: int, port: int, hellolondon_args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        "hellolondon",
        *hellolondon_args,
    ]


def launch_train(args: argparse.Namespace, cfg, parser: argparse.ArgumentParser) -> int:
    """`train --gpus N`: check everything, then run torchrun with the same arguments."""
    n = args.gpus  # checked against the GPUs present by the caller
    port = check_port(args.master_port)
    run_dir = _check_run(args, cfg, n)
    if not args.resume:  # named here, so that the message below can point at the run folder
        args.run_name = cfg.tracking.run_name
    argv = train_argv(args, parser)
    cmd = torchrun_command(
        n, port, (["--debug"] if getattr(args, "debug", False) else []) + ["train", *argv]
    )
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    print("$ " + shlex.join(["torchrun", *cmd[3:]]), flush=True)
    rc, signum = _run_child(cmd, env)
    if rc == 0:
        return 0
    from hellolondon.train.checkpoint import step_dirs

    found = step_dirs(run_dir / "checkpoints")
    where = f"the last complete checkpoint is {found[0]}" if found else "no checkpoint was written"
    how = (
        f"stopped by {signal.Signals(signum).name}"
        if signum
        else f"failed (torchrun exit code {rc}; the failing rank's error is above)"
    )
    again = f"; continue with: hellolondon train --gpus {n} --resume {run_dir}" if found else ""
    print(f"error: distributed training {how}; {where}{again}", file=sys.stderr)
    return rc if rc > 0 else 1


def _check_run(args: argparse.Namespace, cfg, world: int) -> Path:
    """The run folder the ranks will use, after the checks rank 0 would otherwise make late."""
    from hellolondon.prepare import load_meta
    from hellolondon.train import checkpoint
    from hellolondon.train.distributed import resume_batch
    from hellolondon.train.run import default_run_name

    load_meta(Path(cfg.data.data_dir))
    if args.resume:
        ckpt, state = checkpoint.find_resumable(args.resume)
        resume_batch(cfg.train, state, world, log=lambda *_: None)  # the same check the ranks make
        return ckpt.parent.parent
    cfg.tracking.run_name = cfg.tracking.run_name or default_run_name(cfg.preset)
    run_dir = Path(cfg.out_dir) / cfg.tracking.run_name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            f"run folder {run_dir} already exists; choose another --run-name or resume it with --resume {run_dir}"
        )
    return run_dir


def _parent_death_signal() -> None:
    """In the child: get SIGTERM if this launcher dies, so torchrun stops its ranks cleanly."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_child(cmd: list[str], env: dict[str, str]) -> tuple[int, int | None]:
    """Run torchrun; pass SIGTERM on and let Ctrl-C reach it (it shares our terminal).
    Returns (exit code, the signal we passed on or None)."""
    got: list[int] = []
    preexec = _parent_death_signal if sys.platform.startswith("linux") else None
    child = subprocess.Popen(cmd, env=env, preexec_fn=preexec)  # noqa: PLW1509 - only a prctl call

    def forward(signum, frame) -> None:
        got.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    old_term = signal.signal(signal.SIGTERM, forward)
    # Ctrl-C in the terminal reaches torchrun directly; forwarding it as well would count as a
    # second Ctrl-C and abort the ranks instead of letting them checkpoint
    old_int = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        return child.wait(), (got[0] if got else None)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
