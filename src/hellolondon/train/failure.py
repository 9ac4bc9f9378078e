"""A training run that dies of an error says so: in the run folder, the health findings and
W&B, naming the rank that failed first when several train together. One aborted by a second
Ctrl-C says that too, in the run folder and W&B."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from hellolondon.errors import UserError
from hellolondon.tracking.monitor import failure_finding, first_line
from hellolondon.train.distributed import lost_a_peer
from hellolondon.train.run import Run
from hellolondon.train.signals import ABORTED_BY


@contextlib.contextmanager
def failure_reported(run: Run) -> Iterator[None]:
    """Training that dies of an error (out of memory, say) still says so where its health
    findings go, and ends the W&B run as failed: W&B's own exit hook would record a clean exit.
    Under torchrun that error is the one of the rank that failed first: the others only see
    their connection to it close. Training aborted (a second Ctrl-C) is recorded as such and
    goes on out as the KeyboardInterrupt it is."""
    try:
        yield
    except KeyboardInterrupt:
        _record_abort(run)
        raise
    except Exception as exc:
        step = run.state.step
        error, message, peer = _cause(run, exc)
        try:
            _record_failure(run, exc, step, error, message, peer)
        except Exception as other:  # a full disk, say: the first error is the one to show
            print(f"warning: the failure could not be recorded ({other!r})", file=sys.stderr)
        if peer is not None:
            what = f"rank {peer} failed at step {step} ({error}: {message})"
        elif error == LOST_RANK:  # nothing of the dead rank's own to name
            what = f"{message}, at step {step}"
        else:
            raise
        stopped = UserError(f"{what}; rank {run.dist.rank} stopped with it")
        stopped.exit_code = 1
        raise stopped from exc


def _record_failure(
    run: Run, exc: Exception, step: int, error: str, message: str, peer: int | None
) -> None:
    """Say how training failed in the run folder, the health findings and W&B, and end the
    W&B run as failed."""
    if run.dist.enabled and not run.dist.is_main and not lost_a_peer(exc):
        run.rundir.mark_rank_failed(run.dist.rank, step, error, message)  # for rank 0 to name
    on = f" on rank {peer}" if peer is not None else ""
    if run.dist.is_main:
        run.rundir.mark_failed(f"{error} at step {step}{on}")
    said = f"rank {peer}: {message}" if peer is not None else message
    if run.monitor is not None:
        run.monitor.failed(step, error, said)
    else:
        run.tracker.alert(*failure_finding(error, said), "ERROR", step=step, rule="failure")
    run.tracker.finish(exit_code=1)


ABORTED_EXIT_CODE = 130  # what W&B is told of an aborted run: a shell's code for SIGINT


def _record_abort(run: Run) -> None:
    """A second Ctrl-C ends training at once, without the checkpoint a first one waits for:
    the run folder says it was aborted and at which step (not "killed" once the process is
    gone), the logs are flushed and closed, and W&B ends the run with a non-zero exit code
    (another Ctrl-C while it uploads leaves the rest on disk for `wandb sync`). SIGTERM never
    ends up here: training's own handler (`StopSignal`) takes it."""
    try:
        if run.dist.is_main:
            run.rundir.mark_aborted(ABORTED_BY, run.state.step)
        run.tracker.finish(exit_code=ABORTED_EXIT_CODE)
    except Exception as other:  # a full disk, say: the abort itself is what to show
        print(f"warning: the abort could not be recorded ({other!r})", file=sys.stderr)


def _cause(run: Run, exc: Exception) -> tuple[str, str, int | None]:
    """(error type, first line, the other rank it happened on or None) of what ended training:
    where this rank only lost its connection, the error another rank recorded first."""
    error, message = type(exc).__name__, first_line(exc)
    if not run.dist.enabled or not lost_a_peer(exc):
        return error, message, None
    first = run.rundir.rank_failures()
    if not first or first[0]["rank"] == run.dist.rank:
        # the rank that went first left no error (SIGKILL, the out-of-memory killer): say
        # that, not this rank's broken connection
        seen = connection_gist(error, message)
        why = "killed by a signal or the out-of-memory killer?"
        return (
            LOST_RANK,
            f"another rank ended without an error of its own ({why}; here: {seen})",
            None,
        )
    return str(first[0]["error"]), str(first[0]["message"]), int(first[0]["rank"])


LOST_RANK = "lost rank"  # the error named when another rank died without a word

_SOURCE_PLACE = re.compile(r"\[[^\]\s]*\.(?:cc|cpp|c|h|hpp):\d+\]\s*")  # [.../pair.cc:537]
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")


def connection_gist(error: str, message: str, limit: int = 160) -> str:
    """A broken connection as this rank saw it, in a few words: the backend's source position
    dropped and its first sentence kept, cut at a word ("RuntimeError: Read error
    [127.0.0.1]:4504: Connection reset by peer")."""
    text = _SENTENCE_END.split(_SOURCE_PLACE.sub("", message), maxsplit=1)[0].strip()
    seen = f"{error}: {text}" if text else error
    if len(seen) <= limit:
        return seen
    return seen[: limit - 3].rsplit(" ", 1)[0] + "..."
