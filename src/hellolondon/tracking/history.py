"""Read the run folder's JSONL logs back, tolerating a truncated last line (a run killed
mid-write) so that every reader (report, watch, runs, resume) sees the same rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete JSON-object lines of a file; an empty list when it does not exist.
    A line that does not parse is skipped: only the last can be cut short by a kill."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def truncate_after(path: str | Path, step: int) -> int:
    """Drop rows logged after `step` (a resumed run recomputes them exactly); returns how many.
    Rewrites atomically so a crash here loses nothing."""
    path = Path(path)
    rows = read_jsonl(path)
    keep = [r for r in rows if int(r.get("step", 0)) <= step]
    if len(keep) == len(rows):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    tmp.replace(path)
    return len(rows) - len(keep)
