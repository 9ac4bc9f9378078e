"""How a training run is asked to stop: SIGTERM or Ctrl-C, agreed on by every rank."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

ABORTED_BY = "a second Ctrl-C"  # what ends a run at once, with no checkpoint (see below)


class StopSignal:
    """SIGTERM (a scheduler's notice before pre-emption) or a first Ctrl-C asks the loop to
    stop after the current step, write a checkpoint and flush tracking; a second Ctrl-C aborts.

    With several processes the signal reaches them at slightly different moments, so a rank
    only marks it `pending`; `train_step` carries it in the all-reduce it already makes, and
    the loop's next read of the step results turns it into `requested` on every rank at once,
    so all ranks leave after the same step."""

    def __init__(self, distributed: bool = False, verbose: bool = True) -> None:
        self.requested = False  # what the loop acts on
        self.pending = False  # this process got the signal
        self.distributed, self.verbose = distributed, verbose
        self.after = "the start-up"  # what the stop waits for; `training` says it anew
        self.previous: dict[int, Any] = {}  # the handlers before training, put back by `restore`
        self.wakeup: tuple[int, int] | None = None  # a pipe: one byte per signal delivered
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
            self._count_deliveries()

    def _count_deliveries(self) -> None:
        """Python runs a handler between two bytecodes: two Ctrl-Cs pressed while the main
        thread is inside one long C call (a slow CPU step, a compilation) would run it once,
        and the second would be lost. The interpreter's C handler writes each signal's number
        to the wakeup fd as it arrives, so the handler can count them. Not where another part
        of the program already uses the wakeup fd (an asyncio loop)."""
        r, w = os.pipe()
        for fd in (r, w):
            os.set_blocking(fd, False)
        theirs = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        if theirs != -1:  # another part of the program reads it: it stays theirs
            signal.set_wakeup_fd(theirs)
            os.close(r)
            os.close(w)
            return
        self.wakeup = (r, w)

    def _ctrl_cs(self) -> int:
        """The Ctrl-Cs delivered since the last look (each writes a byte to the pipe)."""
        if self.wakeup is None:
            return 0
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.wakeup[0], 4096):
                data += chunk
        return data.count(bytes([signal.SIGINT]))

    def training(self, steps_to_agree: int) -> None:
        """The loop has begun: a stop now waits for the step in progress, or, with several
        processes, for the next step whose results every rank reads (at most `steps_to_agree`
        steps on)."""
        several = self.distributed and steps_to_agree > 1
        self.after = f"at most {steps_to_agree} more steps" if several else "this step"

    def restore(self) -> None:
        """Training is over: Ctrl-C and SIGTERM do again what they did before it (in `demo`,
        say, Ctrl-C during the report after training must stop the command)."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
        if self.wakeup is not None:
            signal.set_wakeup_fd(-1)
            for fd in self.wakeup:
                os.close(fd)
            self.wakeup = None

    def _handle(self, signum, frame) -> None:
        twice = self._ctrl_cs() >= 2  # both arrived before Python could run this handler
        if signum == signal.SIGINT and (self.pending or twice):
            raise KeyboardInterrupt
        self.pending = True
        self.requested = self.requested or not self.distributed
        if self.verbose:
            print(
                f"\n{signal.Signals(signum).name}: stopping after {self.after} and saving a checkpoint",
                flush=True,
            )
