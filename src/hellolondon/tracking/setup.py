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

    def __init__(self, primary: Tracker, *others: Tracker, run_id: str | None = None) -> None:
        super().__init__(primary, *others)
        self._kept_id = run_id

    @property
    def run_id(self) -> str | None:
        """The W&B run this run continues, kept in its checkpoints: also through a start
        without W&B or after W&B failed, so that the next start with W&B resumes that run (and
        re-sends the rows it lacks) instead of beginning another one."""
        return super().run_id or self._kept_id

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
    if wandb is None:
        return RunTracker(local, run_id=resume_run_id)
    return RunTracker(local, wandb, run_id=wandb.run_id)
