"""benchmarks/distributed_bench.py finds the ranks of a `train --gpus N` job to kill one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from distributed_bench import rank_pids  # noqa: E402

SLEEP = f"{sys.executable} -c 'import time; time.sleep(60)'"


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_the_ranks_are_the_descendants_that_read_a_resolved_config():
    # as `train --gpus 2` -> torchrun -> two ranks: `python -u -m hellolondon train
    # --resolved-config FILE`, beside a process of the job that is not a rank
    job = subprocess.Popen(
        [
            "bash",
            "-c",
            f'bash -c "{SLEEP} --resolved-config a & {SLEEP} --resolved-config b & wait" & '
            f"{SLEEP} --not-a-rank & wait",
        ],
        start_new_session=True,
    )
    try:
        for _ in range(200):
            found = rank_pids(job.pid)
            if len(found) == 2:
                break
            time.sleep(0.05)
        assert len(found) == 2
        for pid in found:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"--resolved-config" in argv and b"--not-a-rank" not in argv
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the job's own process group: all it started
        job.wait()
