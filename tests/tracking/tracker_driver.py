"""Drives the run tracker the way the training loop does, in a fresh process (W&B keeps
process-wide state, so every scenario gets its own). Prints `RESULT {json}` as its last line.

usage: python tracker_driver.py RUN_DIR '{"start": 0, "stop": 50, ...}' [extra argv...]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hellolondon.config import build_config
from hellolondon.tracking import wandb_tracker
from hellolondon.tracking.setup import open_tracker


def gpu_row(step: int) -> dict:
    return {
        "gpu/mem_allocated_gb": 1.0 + step / 50,
        "gpu/mem_reserved_gb": 2.0,
        "gpu/max_mem_allocated_gb": 1.5 + step / 50,
        "gpu/utilization": 90.0 if step else 30.0,
    }


def train_row(step: int) -> dict:
    return {
        "train/loss": 9.0 - step / 100,
        "train/lr": 1e-4 * min(1.0, step / 20),
        "train/mfu": 4.5,
        "train/iter": step,
        "train/dt_ms": 120.0,
        "train/tokens_per_sec": 1000.0,
        "train/samples_per_sec": 4.0,
        "train/tokens_seen": 256 * step,
        "train/epoch": step / 1000,
        "train/grad_norm": 1.5,
    }


def eval_row(step: int) -> dict:
    return {
        "eval/train_loss": 9.0 - step / 90,
        "eval/val_loss": 9.1 - step / 90,
        "eval/val_ppl": 8000.0,
        "eval/iter": step,
    }


def kill_wandb_core() -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def main() -> None:
    run_dir, opts = Path(sys.argv[1]), json.loads(sys.argv[2])
    if "finish_timeout_s" in opts:  # a shorter wait at the end, so a test need not wait 120 s
        wandb_tracker.FINISH_TIMEOUT_S = opts["finish_timeout_s"]
    cfg = build_config(opts.get("preset", "tiny"), overrides=opts.get("overrides", []))
    cfg.tracking.run_name = cfg.tracking.run_name or run_dir.name
    run_config = {
        **cfg.to_dict(),
        "model_info": {"preset": cfg.preset, "parameters": 123},
        "data_info": {"corpus": "sample"},
        "hardware": {"gpu_count": 0},
    }
    run_config.update(opts.get("extra_config", {}))
    t0 = time.monotonic()
    tracker = open_tracker(
        cfg,
        run_dir,
        rank=opts.get("rank", 0),
        run_config=run_config,
        resume_run_id=opts.get("resume"),
    )
    open_s = time.monotonic() - t0
    killed: list[int] = []
    every, eval_every = opts.get("every", 10), opts.get("eval_every", 20)
    slowest_call_s = 0.0  # the longest the loop waited on one call of the tracker
    for step in range(opts.get("start", 0), opts.get("stop", 50) + 1, every):
        if step == opts.get("kill_core_at"):
            killed = kill_wandb_core()
            time.sleep(0.5)
        if step == opts.get("sigkill_at"):
            time.sleep(opts.get("sigkill_wait", 1.0))
            os.kill(os.getpid(), signal.SIGKILL)
        t_call = time.monotonic()
        if step % eval_every == 0:
            tracker.log(eval_row(step), step)
        tracker.log({**train_row(step), **(gpu_row(step) if opts.get("gpu") else {})}, step)
        slowest_call_s = max(slowest_call_s, time.monotonic() - t_call)
        time.sleep(opts.get("pause_s", 0.0))  # a training step
    if opts.get("checkpoint"):  # a checkpoint folder as the trainer writes it, then logged
        ckpt = run_dir / "checkpoints" / "step-000050"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"\0" * 1024)
        (ckpt / "state.json").write_text(
            json.dumps(
                {
                    "format": 2,
                    "step": 50,
                    "config": {},
                    "trainer": {"step": 50, "samples_seen": 800, "best_val_loss": 8.5},
                }
            )
        )
        tracker.log_checkpoint(ckpt, ["latest", "best"])
    t_call = time.monotonic()
    tracker.alert(
        "loss plateau",
        "the loss stopped falling",
        "WARN",
        rule="plateau",
        step=opts.get("stop", 50),
    )
    tracker.summary(
        {
            "best_val_loss": 8.5,
            "final_train_loss": 8.6,
            "tokens_seen": 1000,
            "wall_time_s": 1.0,
            "mean_tokens_per_sec": 1000.0,
        }
    )
    slowest_call_s = max(slowest_call_s, time.monotonic() - t_call)
    t_finish = time.monotonic()
    tracker.finish()
    finish_s = time.monotonic() - t_finish
    print(
        "RESULT "
        + json.dumps(
            {
                "open_s": open_s,
                "total_s": time.monotonic() - t0,
                "run_id": tracker.run_id,
                "tracker": type(tracker).__name__,
                "wandb_imported": "wandb" in sys.modules,
                "killed": killed,
                "slowest_call_s": slowest_call_s,
                "finish_s": finish_s,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
