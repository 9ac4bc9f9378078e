"""Numbers as people read them in tables and console lines: counts, values, perplexity and
durations."""

from __future__ import annotations

import math


def fmt_count(x: float | None) -> str:
    """1234567 -> "1.23M"; "-" for None."""
    if x is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


def fmt_value(x: float | None, decimals: int = 4) -> str:
    """A loss or other value to `decimals` places, in short exponent form where that would be
    long or all zeros: 3316053041453541097472.0 -> "3.32e21" (a diverged run); "-" for None."""
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)  # nan, inf, -inf
    if x != 0 and not 1e-3 <= abs(x) < 1e5:
        mantissa, exp = f"{x:.2e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{x:.{decimals}f}"


def perplexity(loss: float) -> float:
    """exp(loss) of a mean loss in nats; inf where that overflows (a diverged run), never a
    capped number that would read as measured."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


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
