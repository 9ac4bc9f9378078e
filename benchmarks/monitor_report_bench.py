"""Cost of the health monitor per logged row, and of `report` and `watch` on runs of growing size.

    python benchmarks/monitor_report_bench.py [--rows 300 6000 60000]

Synthetic run folders (decaying loss with noise, eval every 10 rows, GPU metrics) are written to
a temporary folder; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

from hellolondon.config import MonitorConfig
from hellolondon.report import write_report
from hellolondon.rundir import RunDir
from hellolondon.tracking.monitor import HealthMonitor
from hellolondon.watch import RunView, render_frame


def rows_of(n: int, log_every: int = 10) -> list[dict]:
    rng = random.Random(0)
    out, t = [], 1.7e9
    for r in range(1, n + 1):
        step = r * log_every
        t += 0.6 * log_every
        loss = 2.5 + 8 * (1 + step / 200) ** -0.5
        out.append(
            {
                "step": step,
                "time": t,
                "train/loss": loss * (1 + 0.02 * rng.gauss(0, 1)),
                "train/lr": 6e-4,
                "train/iter": step,
                "train/dt_ms": 600 + 10 * rng.random(),
                "train/mfu": 45 + rng.random(),
                "train/tokens_per_sec": 54000.0,
                "train/grad_norm": 0.5,
                "train/tokens_seen": step * 32768,
                "gpu/mem_allocated_gb": 20.0,
                "gpu/max_mem_allocated_gb": 30.0,
                "gpu/mem_total_gb": 80.0,
            }
        )
        if r % 10 == 0:
            out.append(
                {
                    "step": step,
                    "time": t,
                    "eval/train_loss": loss,
                    "eval/val_loss": loss + 0.1,
                    "eval/iter": step,
                }
            )
    return out


def write_run(root: Path, n: int) -> Path:
    run = root / f"run-{n}"
    run.mkdir()
    rows = rows_of(n)
    RunDir(run).metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    RunDir(run).write_config({"train": {"max_iters": 10 * n}})
    return run


def bench_monitor(n: int) -> float:
    rows = rows_of(n)
    m = HealthMonitor(MonitorConfig(), None, max_iters=10 * n, console=None)
    t = time.perf_counter()
    for row in rows:
        m.observe(row, row["step"])
    return (time.perf_counter() - t) / len(rows) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, nargs="+", default=[300, 6000, 60000])
    args = p.parse_args()
    print(
        f"{'rows':>7} {'monitor us/row':>15} {'report s':>9} {'html KB':>8} {'png KB':>7} "
        f"{'watch first s':>14} {'watch next ms':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            us = bench_monitor(n)
            run = write_run(Path(tmp), n)
            t = time.perf_counter()
            paths = write_report([run], run / "report", quiet=True)
            report_s = time.perf_counter() - t
            view = RunView(run)
            t = time.perf_counter()
            view.refresh()
            render_frame(view, 100)
            first = time.perf_counter() - t
            with open(RunDir(run).metrics_file, "a") as f:
                f.write(json.dumps(rows_of(1)[0]) + "\n")
            t = time.perf_counter()
            view.refresh()
            render_frame(view, 100)
            nxt = (time.perf_counter() - t) * 1000
            kb = {k: math.ceil(v.stat().st_size / 1024) for k, v in paths.items()}
            print(
                f"{n:>7} {us:>15.1f} {report_s:>9.2f} {kb['html']:>8} {kb['png']:>7} "
                f"{first:>14.2f} {nxt:>14.1f}"
            )


if __name__ == "__main__":
    main()
