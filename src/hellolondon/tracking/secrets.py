"""Keep secrets out of everything a run writes: its config, the console, the JSONL logs, W&B.

Two nets. By name: the value under any key named like `*_KEY`, `*_TOKEN`, `*SECRET*`,
`*PASSWORD*` or `API_KEY` is replaced. By value: the text of every secret-named environment
variable (WANDB_API_KEY, HF_TOKEN, ...) and anything shaped like a well-known token is cut out
of every string, wherever it appears (a note, a command line, an error message).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

SECRET_NAME = re.compile(
    r"(_KEY$|^KEY$|_TOKEN$|^TOKEN$|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL)", re.IGNORECASE
)
# Token shapes that are secret wherever they appear (Hugging Face, OpenAI-style, GitHub, Slack,
# W&B v1). A bare 40-hex W&B key is caught through the environment instead: a git commit has the
# same shape and is no secret.
SECRET_SHAPE = re.compile(
    r"\b(hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|wandb_v\d+_[A-Za-z0-9_]{20,})"
)
# `name=value` / `"name": "value"` inside free text (a command line, a JSON string, a note)
SECRET_ASSIGNMENT = re.compile(
    r"""((?:[\w.-]*(?:_KEY|_TOKEN|API[_-]?KEY)|[\w.-]*(?:SECRET|PASSWORD|PASSWD)[\w.-]*)"""
    r"""["']?\s*[=:]\s*["']?)([^\s"',;}]+)""",
    re.IGNORECASE,
)
REDACTED = "***"
MIN_SECRET_LEN = 8  # shorter env values ("1", "true") would redact half the output
_extra: set[str] = set()


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def remember_secret(value: str | None) -> None:
    """Also cut `value` out of every string (a key found in ~/.netrc, not in the environment)."""
    if value and len(value) >= MIN_SECRET_LEN:
        _extra.add(value)


def secret_values() -> list[str]:
    """Values of secret-named environment variables, longest first (so that one containing
    another is removed whole)."""
    found = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(found | _extra, key=len, reverse=True)


def scrub_text(text: str, values: list[str] | None = None) -> str:
    for secret in secret_values() if values is None else values:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    return SECRET_SHAPE.sub(REDACTED, text)


def scrub(value: Any, values: list[str] | None = None) -> Any:
    """A copy of `value` with secret-named keys' values and secret strings replaced, at any depth."""
    values = secret_values() if values is None else values
    if isinstance(value, dict):
        return {
            k: REDACTED
            if is_secret_name(str(k)) and value[k] not in (None, "")
            else scrub(v, values)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v, values) for v in value]
    if isinstance(value, str):
        return scrub_text(value, values)
    return value


def scrub_row(row: dict[str, Any]) -> dict[str, Any]:
    """`scrub` for a metric row: numbers pass untouched, so the cost per row stays tiny."""
    if not any(isinstance(v, str) or is_secret_name(k) for k, v in row.items()):
        return row
    return scrub(row)
