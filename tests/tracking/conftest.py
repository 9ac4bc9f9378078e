"""Fixtures for the W&B tests; the shared code lives in wandb_testkit.py."""

from __future__ import annotations

import pytest
from wandb_testkit import FakeWandb, sealed_env


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A sealed environment for a subprocess: no WANDB_* settings, HOME and W&B folders in tmp."""
    return sealed_env(tmp_path)


@pytest.fixture
def fake_wandb():
    """Start fake W&B servers by mode; all are closed after the test."""
    servers: list[FakeWandb] = []

    def start(mode: str) -> FakeWandb:
        servers.append(FakeWandb(mode))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
