"""The progress bars of long work (cleaning, preparing, evaluating, collecting). On a terminal
a bar redraws up to ten times a second; into a file or a pipe (a log under nohup or a job
scheduler) that would be ten lines a second, so there it is drawn every 30 seconds instead."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between two bar lines written to a file or a pipe


def progress_bar(iterable: Iterable[Any] | None = None, **options: Any) -> tqdm:
    """`tqdm(iterable, **options)`, drawn less often where the bar does not go to a terminal."""
    stream = options.get("file") or sys.stderr
    if not _is_terminal(stream):
        options.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(iterable, **options)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
