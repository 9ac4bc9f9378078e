"""Fixtures for the corpus tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from corpus_server import Server


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()
