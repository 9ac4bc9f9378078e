"""Keep secrets out of everything a run writes: config.json, the console, the JSONL logs, W&B."""

from __future__ import annotations

import re
from typing import Any

SECRET_NAME = re.compile(r"(_KEY$|^KEY$|_TOKEN$|^TOKEN$|SECRET|PASSWORD|API_KEY)", re.IGNORECASE)
REDACTED = "***"


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def scrub(value: Any) -> Any:
    """A copy of `value` with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value
