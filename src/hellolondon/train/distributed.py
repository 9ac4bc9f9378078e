"""Distributed setup. `init_distributed()` is the only place that reads torchrun's variables;
everything else asks the returned `Dist` (rank, world size, device) and its helpers."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from hellolondon.environment import env_number
from hellolondon.errors import UserError
from hellolondon.hardware import resolve_device

# A collective that waits longer than this for a peer fails instead of hanging. torch's own
# default is 10 minutes for NCCL and 30 for gloo; one knob for both keeps failures predictable.
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    fsdp: bool = False  # parameters are sharded with FSDP2 (every rank joins state-dict calls)
    group: bool = False  # a process group runs (under torchrun, also with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.group


def _env_int(name: str, default: int) -> int:
    """A whole number that torchrun (or the user) set in the environment."""
    value = env_number(
        name,
        default,
        whole=True,
        meaning="a whole number >= 0",
        advice="unset it, or start with torchrun, which sets it",
    )
    return int(value)


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun set it for this process (1 outside torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def launched_rank() -> int:
    return _env_int("RANK", 0)


def launched_in_group() -> bool:
    """Whether `init_distributed` starts a process group here (torchrun, even one process)."""
    return launched_world_size() > 1 or "LOCAL_RANK" in os.environ


def init_distributed(device: str = "auto", fsdp: bool = False) -> Dist:
    """Read RANK/LOCAL_RANK/WORLD_SIZE (set by torchrun); start NCCL on CUDA, gloo on CPU.
    Under torchrun a group starts even for one process (`train --gpus 1`: the distributed path,
    DDP or FSDP, on one GPU); a plain `train` is one process without one."""
    if not launched_in_group():  # one process: nothing to shard
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)  # cuda:N: its kernels and contexts there, not on GPU 0
        return Dist(device=dev)
    world = launched_world_size()
    missing = [
        k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise UserError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start with torchrun"
        )
    rank, local_rank = launched_rank(), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local_rank} needs GPU {local_rank} but {torch.cuda.device_count()} are "
                "visible; start at most that many processes per node (--nproc-per-node)"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    timeout = timedelta(seconds=collective_timeout_s())
    _die_with_parent()
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, timeout=timeout, device_id=dev if dev.type == "cuda" else None
        )
    return Dist(
        rank=rank, local_rank=local_rank, world_size=world, device=dev, fsdp=fsdp, group=True
    )


MAX_TIMEOUT_S = 1e8  # about three years


def collective_timeout_s() -> float:
    """HELLOLONDON_DIST_TIMEOUT_S, checked: torch takes any float, and 0 or a negative value
    fails the rendezvous itself with a C++ stack trace instead of saying what is wrong."""
    return env_number(
        "HELLOLONDON_DIST_TIMEOUT_S",
        float(DEFAULT_TIMEOUT_S),
        minimum=0,
        inclusive=False,
        maximum=MAX_TIMEOUT_S,  # far beyond any wait, and within what torch's timedelta takes
        meaning=f"a number of seconds above 0 and at most {MAX_TIMEOUT_S:.0e}",
        advice=f"it is how long a collective waits for its peers (unset, {DEFAULT_TIMEOUT_S})",
    )


# How a collective fails when a peer process is gone: gloo's and NCCL's words for it. Not
# the backends' names: a rank's own NCCL or CUDA fault names NCCL too, and is its own error.
_LOST_PEER = re.compile(
    r"connection (closed|reset)|reset by peer|broken pipe|remote (worker|process)|network error"
    r"|communicator was aborted|timed out waiting",
    re.IGNORECASE,
)


def lost_a_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because another rank did (its process died,
    or closed its end): that rank's own error is then the one to name."""
    network_error = getattr(dist, "DistNetworkError", ())
    return isinstance(exc, network_error) or bool(_LOST_PEER.search(str(exc)))


def _die_with_parent() -> None:
    """torchrun starts workers in their own sessions, so when the launcher itself is killed
    (SIGKILL, OOM killer) they would train on as orphans. Ask Linux to send SIGTERM instead:
    the workers then stop after the step and checkpoint, as on any scheduler notice."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the launcher died before the call above
            os.kill(os.getpid(), signal.SIGTERM)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.AVG if t.device.type == "cuda" else dist.ReduceOp.SUM)
        if t.device.type != "cuda":  # gloo has no AVG
            t /= d.world_size
    return t


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's value of a small picklable object (a run name), on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def grad_sync(model: nn.Module, d: Dist, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on accumulation micro-steps: DDP's `no_sync`, FSDP2's
    `set_requires_gradient_sync`. Inside the last micro-step gradients are reduced once."""
    if sync or not d.enabled:
        return contextlib.nullcontext()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_no_sync(model)
    return model.no_sync()


@contextlib.contextmanager
def _fsdp_no_sync(model: Any) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def split_batch(global_batch: int, world: int, max_batch: int) -> tuple[int, int]:
    """(per-process batch, accumulation steps) that make `global_batch` sequences per optimizer
    step on `world` processes, with the per-process batch as large as possible up to
    `max_batch` (memory) so the fewest micro-steps are needed."""
    if global_batch % world:
        raise UserError(
            f"a global batch of {global_batch} sequences cannot be split evenly over {world} "
            f"processes; use a world size that divides {global_batch}"
        )
    per = global_batch // world
    batch = max(b for b in range(1, min(per, max_batch) + 1) if per % b == 0)
    return batch, per // batch


def gather_object(obj: Any, d: Dist) -> list[Any]:
    """Every rank's value of a small picklable object, in rank order (on every rank)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def resume_batch(
    train: Any,
    state: dict[str, Any],
    world: int,
    log: Callable[[str], None],
    global_batch: int | None = None,
) -> None:
    """Set `train.batch_size`/`grad_accum` for resuming the checkpoint whose state.json is
    `state` on `world` processes. The data order depends only on the samples consumed, so any
    split reads the right samples next; what a split changes is the global batch, which the
    learning-rate schedule and the loss curve assume. So on another world size, settings left
    as saved are re-split to keep the saved global batch (an error when `world` does not
    divide it); settings given explicitly, or a `global_batch`, are obeyed, and a global batch
    change is announced."""
    saved = state["config"]["train"]
    was = int(state.get("world_size", 1))
    old_global = saved["batch_size"] * saved["grad_accum"] * was
    as_saved = (train.batch_size, train.grad_accum) == (saved["batch_size"], saved["grad_accum"])
    if global_batch is not None:
        train.batch_size, train.grad_accum = split_batch(
            global_batch, world, max_batch=train.batch_size
        )
    elif world != was and as_saved:
        train.batch_size, train.grad_accum = split_batch(
            old_global, world, max_batch=train.batch_size
        )
    new_global = train.batch_size * train.grad_accum * world
    # said from the result, not from who split it: under `--gpus` the launcher splits and
    # rank 0, resolving that config again, is the one that prints
    if world != was and new_global == old_global:
        log(
            f"resuming a {was}-process run on {world}: global batch {old_global} kept as "
            f"batch_size {train.batch_size} x grad_accum {train.grad_accum} x {world} "
            + ("process" if world == 1 else "processes")
        )
    elif new_global != old_global:
        log(
            f"warning: the global batch changes from {old_global} to {new_global} sequences at "
            f"sample {state['trainer']['samples_seen']:,}; the data continues from there, none repeated or skipped"
        )


def batch_line(
    d: Dist, batch_size: int, grad_accum: int, block_size: int, micro: tuple[int, int] | None = None
) -> str:
    """The start-of-run line that says what one optimizer step consumes, and how it is run
    when `micro` (sequences, forwards per process: `train.micro_batch`) differs."""
    seqs = batch_size * grad_accum * d.world_size
    how = "FSDP" if d.fsdp else "DDP" if d.enabled else "one process"
    line = (
        f"global batch: {batch_size} x {grad_accum} accumulation x {d.world_size} "
        f"process{'es' * (d.world_size > 1)} = {seqs} sequences = {seqs * block_size:,} tokens per step "
        f"({how} on {d.device.type})"
    )
    if micro is not None and tuple(micro) != (batch_size, grad_accum):
        size, count = micro
        line += f", run as {count} forward{'s' * (count > 1)} of {size} sequences per process (train.micro_batch)"
    return line


def shutdown(d: Dist) -> None:
    """End the process group now, on every rank together, while the interpreter is whole.
    Drop the DDP wrapper first: it holds the group, and a group whose last reference goes only
    at interpreter exit can abort the process there (gloo's threads outlive what they use)."""
    if d.enabled and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()
