"""`hellolondon train --wandb-mode offline` end to end: the W&B guide's start-up lines, W&B history
with the guide's metrics at the loop's steps, the run id kept in checkpoints, `hellolondon runs`,
and a resume that continues the same W&B run with no step twice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_testkit import GUIDE_EVAL, GUIDE_METRICS, history, offline_dirs, sealed_env

TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.batch_size=4",
    "train.warmup_iters=2",
    "train.eval_iters=2",
    "train.log_interval=5",
    "train.eval_interval=10",
    "train.ckpt_interval=10",
    "train.sample_interval=0",
    "train.compile=false",
]


def train(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hellolondon", "train", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_offline_training_run_is_tracked_as_the_guide_describes(tiny_data, tmp_path):
    env = sealed_env(tmp_path)
    first = train(
        env,
        tmp_path,
        "--data",
        str(tiny_data),
        "--wandb-mode",
        "offline",
        *TINY,
        "train.max_iters=20",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert re.search(r"^Model parameters: [\d,]+$", out, re.M)
    assert re.search(r"^num decayed parameter tensors: \d+, with [\d,]+ parameters$", out, re.M)
    start = re.search(
        r"^wandb: Syncing run (london-tiny-demo-\d{8}-\d{6}) \(mode: offline: tracking\.wandb_mode=offline\); "
        r"upload later with: wandb sync runs/(london-tiny-demo-\d{8}-\d{6})/wandb/offline-run-\*-(\w+)$",
        out,
        re.M,
    )
    assert start and start[1] == start[2], out
    name, run_id = start[1], start[3]
    run_dir = tmp_path / "runs" / name

    rows = history(offline_dirs(run_dir)[0], env)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["train/iter"] for r in train_rows] == [5, 10, 15, 20] and all(
        set(r) >= GUIDE_METRICS - {"train/mfu"} for r in train_rows
    )
    assert [r["eval/iter"] for r in rows if "eval/val_loss" in r] == [0, 10, 20]
    assert all(set(r) >= GUIDE_EVAL for r in rows if "eval/val_loss" in r)
    state = json.loads((run_dir / "checkpoints" / "step-000020" / "state.json").read_text())
    assert state["tracker_run_id"] == run_id

    listing = subprocess.run(
        [sys.executable, "-m", "hellolondon", "runs"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert re.search(
        rf"^{name}\s+tiny\s+finished\s+20\s+\d+\.\d{{4}}\s+offline\s+needed$", listing, re.M
    ), listing

    again = train(env, tmp_path, "--resume", str(run_dir), "train.max_iters=30")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"wandb: Resuming run {name} (mode: offline" in again.stdout
    parts = [[r["_step"] for r in history(d, env)] for d in offline_dirs(run_dir)]
    assert len(parts) == 2 and all(d.name.endswith(run_id) for d in offline_dirs(run_dir))
    steps = parts[0] + parts[1]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # continued, nothing twice


@pytest.mark.slow
def test_a_start_without_wandb_keeps_the_run_id_so_the_next_one_refills_its_steps(
    tiny_data, tmp_path
):
    env = sealed_env(tmp_path)
    where = ["--data", str(tiny_data), "--run-name", "r", *TINY]
    first = train(env, tmp_path, *where, "--wandb-mode", "offline", "train.max_iters=10")
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = tmp_path / "runs" / "r"
    (part,) = offline_dirs(run_dir)
    run_id = part.name.rsplit("-", 1)[1]
    resume = ["--resume", str(run_dir)]
    middle = train(env, tmp_path, *resume, "--wandb-mode", "disabled", "train.max_iters=20")
    assert middle.returncode == 0, middle.stdout + middle.stderr
    state = json.loads((run_dir / "checkpoints" / "step-000020" / "state.json").read_text())
    assert state["tracker_run_id"] == run_id  # kept through the start without W&B
    last = train(env, tmp_path, *resume, "--wandb-mode", "offline", "train.max_iters=30")
    assert last.returncode == 0, last.stdout + last.stderr
    assert "wandb: Resuming run r (mode: offline" in last.stdout
    assert all(d.name.endswith(run_id) for d in offline_dirs(run_dir))  # one W&B run
    steps = [r["_step"] for d in offline_dirs(run_dir) for r in history(d, env)]
    assert steps == [0, 5, 10, 15, 20, 25, 30]  # 15 and 20 re-sent from the local log
