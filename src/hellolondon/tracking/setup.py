"""Choose and open the trackers for a run: the JSONL log always, W&B beside it on rank 0."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hellolondon.config import RunConfig
from hellolondon.rundir import RunDir
from hellolondon.tracking.base import FanoutTracker, JsonlTracker, NullTracker, Tracker
from hellolondon.tracking.secrets import scrub, scrub_row, scrub_text


class RunTracker(FanoutTracker):
    """The local log first, W&B second, with secrets scrubbed before either sees a row."""

    def log(self, row: dict[str, Any], step: int) -> None:
        super().log(scrub_row(row), step)

    def alert(
        self, title: str, text: str, level: str = "WARN", *, step: int, rule: str = ""
    ) -> None:
        title, text, rule = scrub_text(title), scrub_text(text), scrub_text(rule)
        super().alert(title, text, level, step=step, rule=rule)

    def summary(self, values: dict[str, Any]) -> None:
        super().summary(scrub(values))


def open_tracker(
    cfg: RunConfig,
    run: RunDir | Path,
    *,
    rank: int = 0,
    run_config: dict[str, Any] | None = None,
    resume_run_id: str | None = None,
    console: Callable[[str], Any] | None = None,
) -> Tracker:
    """Rank 0 gets the local log and W&B (online, offline or disabled as the config, the
    environment and the network allow); every other rank a no-op twin that never imports W&B."""
    if rank != 0:
        return NullTracker()
    from hellolondon.tracking.wandb_start import start_wandb

    run = RunDir(run) if isinstance(run, Path) else run
    local = JsonlTracker(run)  # first, so that the folder exists before W&B looks at it
    say = console or (lambda line: print(scrub_text(line), flush=True))
    wandb = start_wandb(cfg, run, run_config, resume_run_id, console=say)
    return RunTracker(local, wandb) if wandb is not None else RunTracker(local)
