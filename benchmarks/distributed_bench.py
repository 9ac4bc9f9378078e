"""Distributed training on the CPU (gloo): throughput of 1 vs 2 processes at the same global
batch, their largest loss difference, and how long a job takes to end after SIGTERM and after a
rank is killed. Prints one line per measurement.

    python benchmarks/distributed_bench.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_distributed import make_tokens  # noqa: E402 - the tests' learnable token files

MODEL = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=32",
    "train.eval_interval=0",
    "train.log_interval=1",
    "train.ckpt_interval=4",
    "train.sample_interval=0",
    "train.device=cpu",
    "tracking.wandb_mode=disabled",
    "monitor.enabled=false",
    "train.lr=1e-2",
]


def start(out: Path, name: str, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "hellolondon",
        "train",
        "--data",
        str(out / "data"),
        "--out-dir",
        str(out),
        "--run-name",
        name,
        *extra,
        *MODEL,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rows(run: Path) -> list[dict]:
    from hellolondon.rundir import RunDir

    return RunDir(run).rows()


def wait_rows(run: Path, n: int) -> None:
    while sum("train/loss" in r for r in rows(run)) < n:
        time.sleep(0.02)


def throughput(out: Path, steps: int) -> None:
    for name, extra in (
        ("one", ["train.batch_size=16"]),
        ("two", ["--gpus", "2", "train.batch_size=8"]),
    ):
        t0 = time.perf_counter()
        start(out, name, *extra, f"train.max_iters={steps}").wait()
        summary = json.loads((out / name / "summary.json").read_text())
        print(
            f"{name} process(es), global batch 16 x 32 tokens, {steps} steps: "
            f"{summary['mean_tokens_per_sec']:,.0f} tokens/s, {time.perf_counter() - t0:.1f} s wall with start-up"
        )
    a, b = ([r["train/loss"] for r in rows(out / n) if "train/loss" in r] for n in ("one", "two"))
    print(
        f"largest relative loss difference, 1 vs 2 processes: {max(abs(x - y) / x for x, y in zip(a, b, strict=True)):.1e}"
    )


def rank_pids(job: int) -> list[int]:
    """The training ranks that the `train --gpus N` process `job` started through torchrun:
    its descendants that read a resolved config (`--gpus` hands each rank one in a file, so
    their command lines name neither the data nor the run)."""
    found, todo = [], [job]
    while todo:
        children = subprocess.run(
            ["pgrep", "-P", str(todo.pop())], capture_output=True, text=True
        ).stdout.split()
        for pid in map(int, children):
            todo.append(pid)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:  # ended meanwhile
                continue
            if b"--resolved-config" in argv:
                found.append(pid)
    return found


def stop_times(out: Path) -> None:
    job = start(out, "term", "--gpus", "2", "train.batch_size=8", "train.max_iters=100000")
    wait_rows(out / "term", 5)
    t0 = time.perf_counter()
    job.send_signal(signal.SIGTERM)
    job.wait()
    print(
        f"SIGTERM to `train --gpus 2` -> checkpoint written and all processes gone: {time.perf_counter() - t0:.1f} s"
    )
    job = start(out, "dead", "--gpus", "2", "train.batch_size=8", "train.max_iters=100000")
    wait_rows(out / "dead", 5)
    t0 = time.perf_counter()
    os.kill(max(rank_pids(job.pid)), signal.SIGKILL)
    job.wait()
    print(f"SIGKILL of one rank -> the whole job ended: {time.perf_counter() - t0:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        make_tokens(out / "data")
        throughput(out, args.steps)
        stop_times(out)


if __name__ == "__main__":
    main()
