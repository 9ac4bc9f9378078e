"""The declared wandb floor covers every W&B interface the tracking code uses."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

ROOT = Path(__file__).resolve().parents[2]


def version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def declared_floor() -> tuple[int, ...]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"wandb\b", d)]
    return version(spec.split(">=", 1)[1])


def test_floor_is_the_first_release_with_leet_inspect_summary_json():
    # Read from the released wheels: 0.29.0 and 0.30.0 have `wandb leet` but no
    # `inspect --summary --json`; 0.31.0 has it (docs/tracking.md lists the rest).
    assert declared_floor() >= (0, 31, 0)
    assert version(wandb.__version__) >= declared_floor()


def test_installed_wandb_has_what_the_code_uses():
    from wandb.sdk.lib.wbauth import check_api_key, read_netrc_auth

    assert callable(check_api_key) and "host" in inspect.signature(read_netrc_auth).parameters
    fields = wandb.Settings.model_fields
    assert {"init_timeout", "finish_timeout", "finish_timeout_raises", "silent"} <= set(fields)
    assert "wait_duration" in inspect.signature(wandb.Run.alert).parameters
    assert "step_metric" in inspect.signature(wandb.Run.define_metric).parameters
    assert hasattr(wandb.Run, "starting_step") and callable(wandb.teardown)
    assert "create_new" in str(inspect.signature(wandb.init).parameters["reinit"].annotation)
    help_text = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    assert "--summary" in help_text and "--json" in help_text
