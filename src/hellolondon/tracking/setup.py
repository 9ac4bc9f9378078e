"""Choose and open the trackers for a run: the JSONL log always, W&B beside it on rank 0.

Also the tracking flags that every training command shares (`add_tracking_flags`,
`apply_tracking_flags`), so that they read and behave the same everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hellolondon.config import RunConfig
from hellolondon.tracking.base import FanoutTracker, JsonlTracker, NullTracker, Tracker
from hellolondon.tracking.secrets import scrub, scrub_row, scrub_text


class RunTracker(FanoutTracker):
    """The local log first, W&B second, with secrets scrubbed before either sees a row."""

    def log(self, row: dict[str, Any], step: int) -> None:
        super().log(scrub_row(row), step)

    def alert(self, title: str, text: str, level: str = "WARN", **extra: Any) -> None:
        title, text, extra = scrub_text(title), scrub_text(text), scrub(extra)
        self.primary.alert(title, text, level, **extra)
        for t in list(self.others):
            try:
                t.alert(title, text, level, **extra)
            except Exception:  # the W&B tracker turns itself off before this; belt and braces
                self.others.remove(t)

    def summary(self, values: dict[str, Any]) -> None:
        super().summary(scrub(values))

    def log_checkpoint(
        self, path: str | Path, aliases: list[str] | tuple[str, ...] = ("latest",)
    ) -> None:
        for t in self.others:
            if hasattr(t, "log_checkpoint"):
                t.log_checkpoint(path, aliases)


def open_tracker(
    cfg: RunConfig,
    run_dir: Path,
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

    run_dir = Path(run_dir)
    local = JsonlTracker(run_dir)  # first, so that the folder exists before W&B looks at it
    say = console or (lambda line: print(scrub_text(line), flush=True))
    wandb = start_wandb(cfg, run_dir, run_config, resume_run_id, console=say)
    return RunTracker(local, wandb) if wandb is not None else RunTracker(local)


# ---------------------------------------------------------------------------- CLI flags

TRACKING_FLAGS = {  # flag dest -> config key
    "wandb_mode": "tracking.wandb_mode",
    "wandb_project": "tracking.project",
    "wandb_entity": "tracking.entity",
    "run_name": "tracking.run_name",
    "tags": "tracking.tags",
    "notes": "tracking.notes",
    "group": "tracking.group",
}


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "tracking (Weights & Biases beside runs/<name>/metrics.jsonl, which is always written)"
    )
    g.add_argument(
        "--wandb-mode",
        choices=["online", "offline", "disabled"],
        help="default: WANDB_MODE, else online when an API key is set and offline without",
    )
    g.add_argument(
        "--wandb-project", metavar="NAME", help="default: WANDB_PROJECT, else helloLondon"
    )
    g.add_argument("--wandb-entity", metavar="NAME", help="user or team; default: WANDB_ENTITY")
    g.add_argument(
        "--run-name",
        metavar="NAME",
        help="default: london-<kind>-YYYYMMDD-HHMMSS (the preset's prefix)",
    )
    g.add_argument(
        "--tags",
        metavar="A,B",
        help="extra tags besides london,historical,llm,gpt2,1500-1850 and the preset",
    )
    g.add_argument("--notes", metavar="TEXT", help="free text shown on the W&B run")
    g.add_argument("--group", metavar="NAME", help="W&B group that gathers related runs")
    g.add_argument(
        "--log-artifacts",
        action="store_true",
        default=None,
        help="upload each checkpoint as a W&B model Artifact (aliases latest and best)",
    )


def apply_tracking_flags(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """`overrides` with the tracking flags that were given appended as `key=value` (so they win
    over earlier ones). The list is extended in place and also returned."""
    for dest, key in TRACKING_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if getattr(args, "log_artifacts", None):
        overrides.append("tracking.log_artifacts=true")
    return overrides
