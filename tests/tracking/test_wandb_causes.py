"""The start-up check names the cause in the W&B guide's troubleshooting words, from a real HTTP
exchange with a local stand-in, and W&B's own error messages are sorted the same way."""

from __future__ import annotations

import time

import pytest
from wandb_testkit import FAKE_KEY, refused_url

from hellolondon.rundir import RunDir
from hellolondon.tracking.wandb_start import classify, probe, server_status


@pytest.mark.parametrize(
    "mode, words",
    [
        ("401", "API key rejected (401 Unauthorized)"),
        ("403", "permission denied (403 Forbidden)"),
        ("404", "project not found (404 Not Found"),
        ("viewer-then-404", None),
    ],
)
def test_probe_names_the_cause_from_the_status(mode, words, fake_wandb):
    server = fake_wandb(mode)
    cause = probe(server.url, FAKE_KEY, 2.0)
    assert cause == words if words is None else cause.startswith(words)
    assert server.requests and b"viewer" in server.requests[0]


def test_probe_gives_up_on_a_silent_server_within_its_timeout(fake_wandb):
    t0 = time.monotonic()
    cause = probe(fake_wandb("hang").url, FAKE_KEY, 1.0)
    assert time.monotonic() - t0 < 3.0
    assert cause.startswith("network: no answer from")


def test_probe_says_a_server_that_answers_malformed_json_is_not_a_working_wandb_api(fake_wandb):
    server = fake_wandb("badjson")
    cause = probe(server.url, FAKE_KEY, 2.0)
    assert cause == (
        f"server error: {server.url} answered with malformed JSON, not the W&B API: "
        "check WANDB_BASE_URL"
    )


def test_probe_reports_a_refused_connection():
    assert "connection refused" in probe(refused_url(), FAKE_KEY, 2.0)


@pytest.mark.parametrize(
    "message, start",
    [
        ("returned error 404: project not found", "project not found"),
        ("Permission denied for entity team", "permission denied"),
        ("returned error 401: user is not logged in", "API key rejected"),
        ("Timed out while retrying: context deadline exceeded", "network"),
        ("dial tcp: connection refused", "network"),
        # a port that contains 403 is not a status code
        ("POST http://127.0.0.1:40353/graphql giving up: context deadline exceeded", "network"),
        ("something new", "W&B could not start (something new)"),
        # W&B retries a failing server until the budget is spent and calls that a timeout
        ("Timed out while retrying: HTTP 500: boom", "server error: W&B answered HTTP 500"),
        ("returned error 429: rate limited", "server error: W&B answered HTTP 429"),
        ("Run initialization has timed out after 500.0 sec", "network"),  # not a status
    ],
)
def test_wandb_errors_are_sorted_into_the_guides_causes(message, start):
    assert classify(RuntimeError(message)).startswith(start)


def test_causes_never_carry_a_secret(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert FAKE_KEY not in classify(RuntimeError(f"bad key {FAKE_KEY}"))


def test_the_failing_status_is_read_from_the_log_of_this_start_only(tmp_path):
    """W&B reports a server that keeps answering 500 as a timeout; its service's log has the
    status. A log older than this start (an earlier online segment) is not read."""
    run = RunDir(tmp_path / "run")
    segment = run.wandb_dir / "run-20261201_120000-abcd1234"
    (segment / "logs").mkdir(parents=True)
    (segment / "run-abcd1234.wandb").write_bytes(b"")
    log = segment / "logs" / "debug-internal.log"
    retry = '{"level":"INFO","msg":"api: retrying HTTP error","status":%d,"url":"u"}\n'
    log.write_text(retry % 404 + retry % 502 + '{"msg":"done"}\n')
    assert server_status(run, "abcd1234", since=time.time() - 60) == 502
    assert server_status(run, "abcd1234", since=time.time() + 60) is None  # an older start
    assert server_status(run, "other", since=0) is None
    log.write_text(retry % 404)
    assert server_status(run, "abcd1234", since=0) is None  # only 5xx and 429 count
    timeout = RuntimeError(
        "Failed to get resume status for run abcd1234: context deadline exceeded"
    )
    assert classify(timeout).startswith("network")
    assert classify(timeout, 502).startswith("server error: W&B answered HTTP 502")
