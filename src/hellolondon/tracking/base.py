"""The tracker interface the training loop talks to, and the trackers that need no network.

The loop calls `log(row, step)`, `alert(title, text, level)`, `summary(values)` and `finish()`
and never asks which trackers sit behind them or which rank it runs on.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def log(self, row: dict[str, Any], step: int) -> None: ...

    def alert(self, title: str, text: str, level: str = "WARN") -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class NullTracker:
    """The no-op twin for ranks other than 0, so the loop never branches on rank."""

    run_id: str | None = None

    def log(self, row: dict[str, Any], step: int) -> None:
        pass

    def alert(self, title: str, text: str, level: str = "WARN", **extra: Any) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def log_checkpoint(self, path: Any, aliases: Any = ("latest",)) -> None:
        pass

    def finish(self) -> None:
        pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact as text
    return value


class JsonlTracker:
    """Always on: `metrics.jsonl` holds every row with its step and is the source of truth.

    Each row is written and flushed as one line, so a run killed mid-write loses at most the
    line being written and every reader can skip a truncated last line.
    """

    run_id: str | None = None

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._events = open(self.run_dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def log(self, row: dict[str, Any], step: int) -> None:
        line = {"step": int(step), "time": round(time.time(), 3)}
        line.update({k: _jsonable(v) for k, v in row.items()})
        self._metrics.write(json.dumps(line) + "\n")
        self._metrics.flush()

    def alert(self, title: str, text: str, level: str = "WARN", **extra: Any) -> None:
        line = {"time": round(time.time(), 3), "level": level, "title": title, "text": text}
        line.update({k: _jsonable(v) for k, v in extra.items()})
        self._events.write(json.dumps(line) + "\n")
        self._events.flush()

    def summary(self, values: dict[str, Any]) -> None:
        path = self.run_dir / "summary.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update({k: _jsonable(v) for k, v in values.items()})
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(old, indent=2))
        os.replace(tmp, path)

    def finish(self) -> None:
        for f in (self._metrics, self._events):
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()


class FanoutTracker:
    """Sends every call to all trackers. The first is the source of truth; a failure in any
    other one is reported once and that tracker is dropped, so training never stops for it."""

    def __init__(self, primary: Tracker, *others: Tracker) -> None:
        self.primary = primary
        self.others = list(others)

    @property
    def run_id(self) -> str | None:
        for t in self.others:
            if getattr(t, "run_id", None):
                return t.run_id
        return None

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

    def alert(self, title: str, text: str, level: str = "WARN", **extra: Any) -> None:
        self.primary.alert(title, text, level, **extra)
        for t in list(self.others):
            try:
                t.alert(title, text, level)
            except Exception as exc:
                self.others.remove(t)
                print(f"tracking: {type(t).__name__} failed on alert ({exc})", file=sys.stderr)

    def summary(self, values: dict[str, Any]) -> None:
        self._each("summary", values)

    def finish(self) -> None:
        self._each("finish")
