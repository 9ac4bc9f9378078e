"""Secrets are cut out by name (keys like *_KEY, *_TOKEN, *SECRET*) and by value (the text of
secret environment variables, well-known token shapes), and rows of numbers pass untouched."""

from __future__ import annotations

import json

from hellolondon.tracking.base import JsonlTracker
from hellolondon.tracking.secrets import REDACTED, is_secret_name, scrub, scrub_row, scrub_text
from hellolondon.tracking.setup import RunTracker

HF = "hf_" + "a1B2" * 9
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"


def test_names_that_hold_secrets():
    for name in (
        "WANDB_API_KEY",
        "api_key",
        "HF_TOKEN",
        "token",
        "client_secret",
        "SECRET",
        "db_password",
        "apikey",
    ):
        assert is_secret_name(name), name
    for name in (
        "train/tokens_seen",
        "special_tokens",
        "keep_last",
        "tokenizer_fingerprint",
        "monkey",
        "n_head",
    ):
        assert not is_secret_name(name), name


def test_scrub_replaces_secret_keys_at_any_depth_and_keeps_everything_else():
    config = {
        "train": {"lr": 3e-4},
        "env": {"WANDB_API_KEY": "k" * 40, "PATH": "/bin"},
        "list": [{"hf_token": "x"}],
        "empty_token": "",
        "commit": GIT_SHA,
    }
    clean = scrub(config)
    assert clean["env"] == {"WANDB_API_KEY": REDACTED, "PATH": "/bin"} and clean["train"] == {
        "lr": 3e-4
    }
    assert clean["list"] == [{"hf_token": REDACTED}] and clean["empty_token"] == ""
    assert clean["commit"] == GIT_SHA  # a commit hash has a key's shape and is no secret
    assert config["env"]["WANDB_API_KEY"] == "k" * 40  # the input is left alone


def test_values_of_secret_environment_variables_are_cut_from_any_text(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-42")
    monkeypatch.setenv("SHORT_KEY", "1")  # too short to hunt for
    text = scrub_text("retrying with s3cr3t-value-42 at step 1 and " + HF)
    assert text == f"retrying with {REDACTED} at step 1 and {REDACTED}"
    assert scrub({"notes": "key s3cr3t-value-42"}) == {"notes": f"key {REDACTED}"}


def test_assignments_in_free_text_are_cut():
    assert (
        scrub_text("WANDB_API_KEY=abc123def python train.py")
        == f"WANDB_API_KEY={REDACTED} python train.py"
    )
    assert scrub_text('{"api_key": "zzz999"}') == f'{{"api_key": "{REDACTED}"}}'
    assert scrub_text("train_tokens=5 tokens_seen: 7") == "train_tokens=5 tokens_seen: 7"


def test_rows_of_numbers_pass_as_they_are():
    row = {"train/loss": 3.2, "train/iter": 10, "train/tokens_seen": 2560}
    assert scrub_row(row) is row
    assert scrub_row({"note": HF}) == {"note": REDACTED}


def test_the_run_tracker_scrubs_before_the_local_log(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF)
    tracker = RunTracker(JsonlTracker(tmp_path))
    tracker.log({"train/loss": 1.0, "note": f"token {HF}"}, 1)
    tracker.alert(f"title {HF}", f"text {HF}", "WARN", step=1, rule=HF)
    tracker.summary({"api_key": "abcdefgh12", "best_val_loss": 2.0})
    tracker.finish()
    for name in ("metrics.jsonl", "events.jsonl", "summary.json"):
        assert (
            HF not in (tmp_path / name).read_text()
            and "abcdefgh12" not in (tmp_path / name).read_text()
        )
    assert json.loads((tmp_path / "summary.json").read_text())["best_val_loss"] == 2.0
