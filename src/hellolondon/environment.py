"""Numbers read from environment variables. Each is checked where it is read, so a bad value
is one line naming the variable, what it should be and what to do, not a stack trace later."""

from __future__ import annotations

import math
import os

from hellolondon.errors import UserError


def env_number(
    name: str,
    default: float | None,
    *,
    whole: bool = False,
    minimum: float = 0.0,
    inclusive: bool = True,
    maximum: float = math.inf,
    meaning: str,
    advice: str,
) -> float | None:
    """The number in `name` (`default` when unset or blank): a finite float, or an int when
    `whole`, no lower than `minimum` (or above it when not `inclusive`) and no higher than
    `maximum`; otherwise a UserError
    saying "NAME='raw' is not <meaning>; <advice>"."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value: float = int(raw) if whole else float(raw)
    except ValueError:
        value = math.nan
    in_range = (value >= minimum if inclusive else value > minimum) and value <= maximum
    if not (math.isfinite(value) and in_range):
        raise UserError(f"{name}={raw!r} is not {meaning}; {advice}")
    return value
