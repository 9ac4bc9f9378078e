"""The tracker interface the training loop talks to, and the trackers that need no network.

The loop calls `log(row, step)`, `alert(title, text, level)`, `summary(values)` and
`finish(exit_code)` (non-zero when training died of an error), and never asks which trackers
sit behind them or which rank it runs on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

from hellolondon.rundir import RunDir, now


class Tracker(Protocol):
    """What the loop talks to. Every tracker implements every method: no probing."""

    run_id: str | None  # the W&B run id, kept in checkpoints so a resume continues that run

    def log(self, row: dict[str, Any], step: int) -> None: ...

    def alert(
        self, title: str, text: str, level: str = "WARN", *, step: int, rule: str = ""
    ) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class NullTracker:
    """The no-op twin for ranks other than 0, so the loop never branches on rank."""

    run_id: str | None = None

    def log(self, row: dict[str, Any], step: int) -> None:
        pass

    def alert(
        self, title: str, text: str, level: str = "WARN", *, step: int, rule: str = ""
    ) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class JsonlTracker(NullTracker):
    """Always on: the run's metrics log holds every row with its step and is the source of truth;
    its events log every alert with its step and rule; its summary the outcome."""

    def __init__(self, run: RunDir | Path) -> None:
        self.run = run = RunDir(run) if isinstance(run, Path) else run
        self._metrics, self._events = run.metrics_log(), run.events_log()

    def log(self, row: dict[str, Any], step: int) -> None:
        self._metrics.write({"step": int(step), "time": now(), **row})

    def alert(
        self, title: str, text: str, level: str = "WARN", *, step: int, rule: str = ""
    ) -> None:
        line = {"step": int(step), "time": now(), "level": level, "title": title, "text": text}
        self._events.write(line | ({"rule": rule} if rule else {}))

    def summary(self, values: dict[str, Any]) -> None:
        self.run.update_summary(values)

    def finish(self, exit_code: int = 0) -> None:
        self._metrics.close()
        self._events.close()


class FanoutTracker:
    """Sends every call to all trackers. The first is the source of truth; a failure in any
    other one is reported once and that tracker is dropped, so training never stops for it."""

    def __init__(self, primary: Tracker, *others: Tracker) -> None:
        self.primary = primary
        self.others = list(others)

    @property
    def run_id(self) -> str | None:
        return next((t.run_id for t in self.others if t.run_id), None)

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        getattr(self.primary, method)(*args, **kwargs)
        for t in list(self.others):
            try:
                getattr(t, method)(*args, **kwargs)
            except Exception as exc:  # a tracker must never stop training
                self.others.remove(t)
                print(
                    f"tracking: {type(t).__name__} failed ({type(exc).__name__}: {exc}); "
                    "continuing with the local log only",
                    file=sys.stderr,
                )

    def log(self, row: dict[str, Any], step: int) -> None:
        self._each("log", row, step)

    def alert(
        self, title: str, text: str, level: str = "WARN", *, step: int, rule: str = ""
    ) -> None:
        self._each("alert", title, text, level, step=step, rule=rule)

    def summary(self, values: dict[str, Any]) -> None:
        self._each("summary", values)

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None:
        self._each("log_checkpoint", path, aliases)

    def finish(self, exit_code: int = 0) -> None:
        self._each("finish", exit_code)
