"""An offline run, read back with W&B's own reader: the W&B guide's metric names at the right steps,
the panels' x-axes, the full run config, tags, alerts and summary, and no secret anywhere."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_testkit import GUIDE_EVAL, GUIDE_METRICS, drive, leet, offline_dirs, sealed_env

from hellolondon.rundir import read_jsonl

HF_SECRET = "hf_" + "Q" * 34
PLAIN_SECRET = "plain-secret-value-1234"


@pytest.fixture(scope="module")
def run(made_once):
    def make(root: Path):
        env = sealed_env(root, HF_TOKEN=HF_SECRET, MY_SERVICE_PASSWORD=PLAIN_SECRET)
        run_dir = root / "runs" / "london-tiny-demo-20261126-101500"
        run_dir.parent.mkdir()
        extra = {"auth": {"api_key": "inline-key-value-777", "note": f"token {HF_SECRET}"}}
        out = drive(
            run_dir,
            env,
            60,
            f"--notes={PLAIN_SECRET}",
            overrides=[
                "tracking.tags=mine",
                "tracking.notes=first try",
                "tracking.log_artifacts=true",
            ],
            extra_config=extra,
            checkpoint=True,
            gpu=True,
        )
        assert out.returncode == 0, out.stderr
        return run_dir, env, out

    return made_once("wandb-offline-run", make)


@pytest.fixture(scope="module")
def records(run, made_once):
    """The run's W&B log as W&B's own reader sees it, read once for all the tests."""
    run_dir, env, _ = run
    part = offline_dirs(run_dir)[0]
    return made_once("wandb-offline-records", lambda _: (leet(part, env), leet(part, env, True)))


def test_one_start_line_names_the_run_mode_cause_and_exact_sync_command(run):
    run_dir, _, out = run
    start = [line for line in out.lines() if "Syncing run" in line]
    assert len(start) == 1
    line = start[0]
    assert line.startswith(
        "wandb: Syncing run london-tiny-demo-20261126-101500 (mode: offline: API key not found"
    )
    command = line.split("upload later with: ")[1]
    assert command.startswith(
        "wandb sync runs/london-tiny-demo-20261126-101500/wandb/offline-run-*-"
    )
    matched = glob.glob(str(run_dir.parent.parent / command.split(" ", 2)[2]))
    assert [Path(m) for m in matched] == offline_dirs(run_dir)
    assert out.result["run_id"] and command.endswith(out.result["run_id"])


def test_history_holds_the_guide_metrics_at_the_loop_steps(records):
    rows = [r["history"]["item"] for r in records[0] if r["type"] == "history"]
    assert [r["_step"] for r in rows] == list(range(0, 51, 10))  # no placeholder row before step 0
    for r in rows:
        assert set(r) >= GUIDE_METRICS and r["train/iter"] == r["_step"]
        assert r["train/loss"] == pytest.approx(9.0 - r["_step"] / 100)
    evals = [r for r in rows if "eval/val_loss" in r]
    assert [r["eval/iter"] for r in evals] == [0, 20, 40]  # an eval and a train row share a step
    assert all(set(r) >= GUIDE_EVAL for r in evals)


def test_panels_plot_train_against_train_iter_and_eval_against_eval_iter(records):
    metrics = [r["metric"] for r in records[0] if r["type"] == "metric"]
    axes = {m.get("glob_name") or m.get("name"): m.get("step_metric") for m in metrics}
    assert axes["train/*"] == "train/iter" and axes["eval/*"] == "eval/iter"
    assert axes["gpu/*"] == "train/iter"


def test_summary_holds_gpu_memory_peak_and_average_and_utilization(records):
    summary = records[1]["summary"]
    # steps 0, 10, ..., 50: allocated 1.0 to 2.0, utilization 30 then 90
    assert summary["gpu/mem_allocated_gb"] == pytest.approx({"last": 2.0, "max": 2.0, "mean": 1.5})
    assert summary["gpu/mem_reserved_gb"] == pytest.approx({"last": 2.0, "max": 2.0, "mean": 2.0})
    assert summary["gpu/utilization"] == pytest.approx({"last": 90.0, "max": 90.0, "mean": 80.0})
    assert summary["gpu/max_mem_allocated_gb"] == pytest.approx(2.5)  # itself the peak


def test_run_config_tags_notes_summary_and_alert(run, records):
    run_dir = run[0]
    log, summary = records
    start = next(r["run"] for r in log if r["type"] == "run")
    assert start["project"] == "helloLondon" and start["display_name"] == run_dir.name
    assert start["tags"] == ["london", "historical", "llm", "gpt2", "1500-1850", "tiny", "mine"]
    config = start["config"]["update"]
    assert {"model", "train", "data", "tracking", "model_info", "data_info", "hardware"} <= set(
        config
    )
    assert config["train"]["lr"] == 1e-3 and config["model_info"]["parameters"] == 123
    assert config["auth"] == {"api_key": "***", "note": "token ***"}
    alert = next(r["alert"] for r in log if r["type"] == "alert")
    assert (
        alert["title"] == "loss plateau"
        and alert["level"] == "WARN"
        and "iteration 50" in alert["text"]
    )
    assert summary["summary"]["best_val_loss"] == 8.5 and summary["state"] == "finished"
    assert summary["notes"] == "first try"


def test_jsonl_log_holds_every_row_and_the_alert(run):
    run_dir, _, _ = run
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(0, 51, 10))
    assert [r["step"] for r in rows if "eval/val_loss" in r] == [0, 20, 40]
    events = read_jsonl(run_dir / "events.jsonl")
    assert events[0]["title"] == "loss plateau" and events[0]["rule"] == "plateau"
    state = json.loads((run_dir / "tracking.json").read_text())
    assert state["mode"] == "offline" and state["status"] == "finished"


def test_no_secret_reaches_any_file_or_the_console(run):
    run_dir, _, out = run
    for secret in (HF_SECRET, PLAIN_SECRET, "inline-key-value-777"):
        assert secret not in out.stdout + out.stderr
        for path in run_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_the_printed_sync_command_is_one_wandb_accepts(run):
    run_dir, env, out = run
    dirs = [str(d) for d in offline_dirs(run_dir)]
    dry = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", *dirs],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert out.result["run_id"] in dry.stdout + dry.stderr


def test_checkpoints_are_model_artifacts_with_latest_and_best(records):
    log, _ = records
    (artifact,) = [r["artifact"] for r in log if r["type"] == "artifact"]
    assert sorted(artifact["aliases"]) == ["best", "latest"] and artifact["type"] == "model"
    assert artifact["name"] == "london-tiny-demo-20261126-101500-model"
    assert {c["path"] for c in artifact["manifest"]["contents"]} == {
        "model.safetensors",
        "state.json",
    }
    meta = json.loads(artifact["metadata"])
    assert meta == {"path": "checkpoints/step-000050", "step": 50, "best_val_loss": 8.5,
                    "samples_seen": 800}  # fmt: skip
