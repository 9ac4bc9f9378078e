"""Numbers as people read them in tables and console lines: counts and durations."""

from __future__ import annotations


def fmt_count(x: float | None) -> str:
    """1234567 -> "1.23M"; "-" for None."""
    if x is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def fmt_duration(seconds: float | None) -> str:
    """Seconds as "4m05s", "2h07m" or "3d04h"; "-" for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    if d:
        return f"{d}d{h:02d}h"
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
