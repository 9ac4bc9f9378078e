"""The GPU acceptance script's own logic, on the CPU: its shortened path (tiny model, a slice of
the corpus) from data to a SIGTERM and resume, and the nanoGPT driver beside `bench`, through a
stand-in model.py (nanoGPT's own file is not part of this repository)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = """
from dataclasses import dataclass

import torch

from hellolondon.config import ModelConfig
from hellolondon.model import GPT as _GPT


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False


class GPT(_GPT):
    def __init__(self, c):
        super().__init__(ModelConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                     block_size=c.block_size, vocab_size=c.vocab_size))

    def get_num_params(self):
        return self.num_params()

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas)
"""


def _suite(tmp_path: Path, *args: str, timeout: int = 120, **env: str):
    """The suite's CPU path with these arguments, its work folder in tmp_path: the finished
    process and its JSON lines."""
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "--cpu", *args],
        env={**os.environ, "PYTHON": sys.executable, "SUITE_WORK": str(tmp_path / "work"), **env},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done, rows


def test_the_suite_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_suite.sh")]).returncode == 0


@pytest.mark.slow
def test_the_suite_runs_its_cpu_path(tmp_path):
    stand_in = tmp_path / "nano"
    stand_in.mkdir()
    (stand_in / "model.py").write_text(STAND_IN)
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src"), "SUITE_WORK": str(tmp_path / "work")}  # fmt: skip
    # `torchrun` is `train --gpus 2`, and `fsdp` the same with train.fsdp=true: the distributed
    # tests (tests/test_distributed.py) run both, so this run leaves them out
    sections = "data run resume bench eval export generate"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "--cpu",
         "--sections", sections, "--nanogpt", str(stand_in), "--budget", "300",
         "--benches", "tiny:2 tiny:2:train.micro_batch=1+train.grad_clip=0.5"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    steps = {r["step"]: r["rc"] for r in rows if "step" in r}
    assert steps == {"corpus": 0, "tokenizer": 0, "prepare": 0, "run-whole": 0, "run-cut": 0,
                     "run-resumed": 0, "eval": 0, "export": 0,
                     "generate": 0}  # fmt: skip
    losses = next(r for r in rows if r.get("check") == "losses")
    assert losses["ok"] and losses["steps_compared"] > 0
    assert losses["max_abs_diff"] == 0.0  # on the CPU the resumed run is bitwise the same
    noise = next(r for r in rows if r.get("check") == "noise")  # two runs up to the cut
    assert noise["ok"] and noise["steps_compared"] > 0 and noise["max_abs_diff"] == 0.0
    benches = [r for r in rows if r.get("section") == "bench"]
    assert [b["impl"] for b in benches] == ["hellolondon", "nanoGPT", "hellolondon"]
    assert all(b["result"]["tokens_per_sec"] > 0 for b in benches)
    assert all(len(b["result"]["ms_per_iter_windows"]) == 3 for b in benches)  # the spread
    assert benches[2]["options"] == "train.micro_batch=1 train.grad_clip=0.5"
    ratio, with_options = [r for r in rows if r.get("section") == "bench-ratio"]
    # the row with settings is compared with the plain row's nanoGPT timing
    assert with_options["options"] == "train.micro_batch=1 train.grad_clip=0.5"
    assert with_options["tokens_per_sec_ratio"] == pytest.approx(
        benches[2]["result"]["tokens_per_sec"] / benches[1]["result"]["tokens_per_sec"]
    )
    low, high = ratio["ratio_range"]
    assert low <= ratio["tokens_per_sec_ratio"] <= high
    # the first pair is profiled on both sides, kind by kind
    assert ratio["ms_per_step_by_kind"]["matmul"][0] > 0
    assert ratio["ms_per_step_by_kind"]["matmul"][1] > 0
    assert rows[-1]["section"] == "done"


def test_a_bench_past_the_step_timeout_is_stopped_and_noted(tmp_path):
    """Benches and checks write to a pipe, not through `run`: they too stop at --step-timeout."""
    stand_in = tmp_path / "nano"
    stand_in.mkdir()
    (stand_in / "model.py").write_text(STAND_IN)
    done, _ = _suite(tmp_path, "--sections", "bench", "--nanogpt", str(stand_in),
                     "--step-timeout", "1", PYTHONPATH=str(ROOT / "src"))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # a failed bench fails the call
    rows = [
        json.loads(line)
        for line in (tmp_path / "out" / "results.jsonl").read_text().split("\n")
        if line
    ]
    benches = [r for r in rows if r.get("section") == "bench" and "impl" in r]
    assert {b["impl"] for b in benches} == {"hellolondon", "nanoGPT"}
    assert all(b["result"] is None for b in benches)  # python alone takes more than a second
    notes = [r["note"] for r in rows if "note" in r]
    assert any("nanoGPT bench" in n and "failed" in n for n in notes)
    assert rows[-1]["section"] == "done"
    assert rows[-1]["failed"] == ["bench tiny 8", "nanoGPT bench tiny 8"]


def test_a_command_running_at_the_budgets_end_is_stopped_and_later_rows_skipped(tmp_path):
    """The budget bounds the whole call: a command still running when it is spent is stopped
    (here our bench, timing its steps many times over), and what would start after it is
    skipped for time (nanoGPT's side of the pair, the next row); the `done` line still comes,
    and says which is which."""
    stand_in = tmp_path / "nano"
    stand_in.mkdir()
    (stand_in / "model.py").write_text(STAND_IN)
    done, rows = _suite(tmp_path, "--sections", "bench", "--benches", "tiny:8 tiny:8:muon",
                        "--budget", "30", "--nanogpt", str(stand_in),
                        PYTHONPATH=str(ROOT / "src"), BENCH_REPEAT="100000")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    notes = [r["note"] for r in rows if "note" in r]
    assert "bench tiny 8 failed (stopped: the budget of 30 s was spent): see suite.log" in notes
    assert "nanoGPT bench tiny 8 skipped: the budget of 30 s was spent" in notes
    assert any(n.startswith("skipped (bench tiny:8:muon): about 20 s more") for n in notes)
    last = rows[-1]
    assert last["section"] == "done" and last["seconds"] < 45
    assert last["failed"] == ["bench tiny 8 (stopped: budget)"] and last["passed"] == []
    assert last["skipped"] == ["nanoGPT bench tiny 8 (time)", "bench tiny:8:muon (time)"]
    assert done.stderr.splitlines()[-3:] == [
        "passed (0):",
        "failed (1): bench tiny 8 (stopped: budget)",
        "skipped (2): nanoGPT bench tiny 8 (time); bench tiny:8:muon (time)",
    ]


def test_a_command_past_the_step_timeout_says_so_and_what_needs_it_is_skipped(tmp_path):
    done, rows = _suite(tmp_path, "--sections", "tests run", "--step-timeout", "1")
    assert done.returncode == 1
    tests = next(r for r in rows if r.get("step") == "tests")  # pytest and torch take longer
    assert tests["rc"] == 124 and tests["stopped"] == "--step-timeout"
    assert rows[-1]["failed"] == ["tests (stopped: --step-timeout)"]
    assert rows[-1]["skipped"] == ["run (no token files)"]  # the data section did not run


def test_the_muon_section_reports_torchs_step_and_ours(tmp_path):
    done, rows = _suite(tmp_path, "--sections", "muon")
    assert done.returncode == 0, done.stdout + done.stderr
    impls = [r["result"]["impl"] for r in rows if r.get("section") == "muon"]
    assert len(impls) == 2 and "hellolondon" in impls
    assert rows[-1]["passed"] == ["muon tiny"]


def test_sections_without_the_run_they_need_are_skipped_not_failed(tmp_path):
    done, rows = _suite(tmp_path, "--sections", "resume eval export generate", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [r for r in rows if "step" in r]  # nothing ran
    assert rows[-1]["skipped"] == ["resume (no token files)", "eval (no uninterrupted run)",
                                   "export (no uninterrupted run)",
                                   "generate (no uninterrupted run)"]  # fmt: skip
    assert rows[0]["note"].startswith("skipped: no token files (")


def test_a_missing_package_fails_its_section_with_a_note_naming_it(tmp_path):
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "pytest.py").write_text("raise ImportError('not installed')\n")
    done, rows = _suite(tmp_path, "--sections", "tests", PYTHONPATH=str(hidden), timeout=60)
    assert done.returncode == 1
    assert rows[0]["note"].startswith(f"failed: {sys.executable} cannot import pytest (put its")
    assert rows[-1]["failed"] == ["tests (no pytest)"]


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of package `name`, version 0.1."""
    import zipfile

    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def test_wheels_the_interpreter_lacks_are_installed_into_the_work_folder(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "hlsuite_probe")
    _wheel(wheels, "pytest")  # there already: left as it is
    done, rows = _suite(tmp_path, "--sections", "none", SUITE_WHEELS=str(wheels))
    assert rows[0] == {"section": "wheels", "wheels": 2, "installed": 1, "rc": 0,
                       "seconds": rows[0]["seconds"]}  # fmt: skip
    assert (tmp_path / "work" / "site" / "hlsuite_probe" / "__init__.py").is_file()
    assert "wheels" in rows[-1]["passed"]


def test_wheels_pip_cannot_install_are_a_note_and_a_failure(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "hlsuite_probe-0.1-py3-none-any.whl").write_text("not a zip")
    done, rows = _suite(tmp_path, "--sections", "none", SUITE_WHEELS=str(wheels))
    assert done.returncode == 1
    assert rows[0]["section"] == "wheels" and rows[0]["rc"] != 0
    assert rows[1]["note"].startswith(f"pip could not install the wheels in {wheels}")
    assert rows[-1]["failed"] == ["wheels"]


def _own_work_folder(tmp_path: Path) -> dict[str, str]:
    """The environment of a suite that makes its own work folder, in tmp_path/tmp."""
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SUITE_WORK"}
    return {**env, "PYTHON": sys.executable, "TMPDIR": str(tmp_path / "tmp")}


def test_a_work_folder_of_its_own_is_removed_at_the_end(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "--cpu",
         "--sections", "env"],
        env=_own_work_folder(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert rows[-1]["section"] == "done" and rows[-1]["work"] is None
    assert list((tmp_path / "tmp").iterdir()) == []  # its checkpoints would take gigabytes
    assert (tmp_path / "out" / "suite.log").is_file()  # the logs stay in the output folder


@pytest.mark.parametrize(
    "args, said",
    [
        (["--bogus"], "unknown option --bogus"),
        (["out", "--nanogpt"], "--nanogpt needs a value"),
        (["out", "--sections", "--cpu"], "--sections needs a value"),
        (["out", "--cpu", "--budget", "abc"], "take whole seconds, not 'abc'"),
        (["out", "--step-timeout", "0"], "--step-timeout must be at least 1 second"),
        (["out", "data"], "one output folder, not both out and data"),  # `--section data`
        (["out", "--nanogpt", "nano"], "no model.py in --nanogpt "),
        (["--cpu"], "give the output folder first"),
        (["out", "--sections", "env bogus"], "unknown section 'bogus'; sections: none env tests"),
        (["out", "--benches", "slm:x"], "row 'slm:x': batch 'x' is not a number of sequences"),
        (["out", "--benches", "slm:32 slm:0"], "row 'slm:0': batch '0' is not a number"),
        (["out", "--benches", "big:8"], "row 'big:8': preset 'big' is not tiny, slm or regular"),
        (["out", "--benches", "tiny:8:fp9"], "row 'tiny:8:fp9': option 'fp9' is not muon, fp8,"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2_before_anything_is_written(tmp_path, args, said):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), *args], cwd=tmp_path,
        env={**os.environ, "PYTHON": sys.executable, "SUITE_WORK": str(tmp_path / "work")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert said in done.stderr and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no output folder, no work folder


def test_an_output_folder_that_is_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "out").write_text("kept")
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "out", "--cpu"], cwd=tmp_path,
        env={**os.environ, "PYTHON": sys.executable, "SUITE_WORK": str(tmp_path / "work")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert "out is a file; give a folder" in done.stderr and done.stderr.count("\n") == 1
    assert (tmp_path / "out").read_text() == "kept" and not (tmp_path / "work").exists()


def test_a_sigterm_to_the_suite_stops_its_command_and_removes_the_work_folder(tmp_path):
    suite = subprocess.Popen(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "--cpu",
         "--sections", "data run"],
        env=_own_work_folder(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    log = tmp_path / "out" / "suite.log"
    deadline = time.monotonic() + 90
    while "### run-whole" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and suite.poll() is None
        time.sleep(0.2)
    time.sleep(2)  # the training command is under way
    suite.send_signal(signal.SIGTERM)
    assert suite.wait(timeout=90) != 0
    running = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "tmp") not in running  # the training command stopped with the suite
    assert not list((tmp_path / "tmp").glob("hl-suite.*"))  # and its work folder is gone


def test_a_sigterm_to_the_suite_stops_a_bench_it_is_timing(tmp_path):
    """A bench's output is read by the suite, not sent through `run`: the signal reaches it
    all the same, and the suite ends at once rather than when the bench's limit is spent."""
    env = _own_work_folder(tmp_path) | {"PYTHONPATH": str(ROOT / "src"), "BENCH_REPEAT": "100000"}
    suite = subprocess.Popen(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "--cpu",
         "--sections", "bench", "--benches", "tiny:8"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    log = tmp_path / "out" / "suite.log"
    deadline = time.monotonic() + 60
    while not any(" bench --preset" in args for args in _started_in(tmp_path / "tmp")):
        assert time.monotonic() < deadline and suite.poll() is None
        time.sleep(0.2)
    time.sleep(1)
    suite.send_signal(signal.SIGTERM)
    assert suite.wait(timeout=30) == 143
    time.sleep(0.5)
    assert _started_in(tmp_path / "tmp") == []  # the bench stopped with the suite
    assert not list((tmp_path / "tmp").glob("hl-suite.*")) and log.exists()


def _started_in(tmp: Path) -> list[str]:
    """The command lines of the processes whose TMPDIR is `tmp`: those a suite started."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"TMPDIR={tmp}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_relative_paths_are_the_callers_not_the_repositorys(tmp_path):
    (tmp_path / "nano").mkdir()
    (tmp_path / "nano" / "model.py").write_text(STAND_IN)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "out", "--cpu", "--nanogpt", "nano",
         "--sections", "env"],
        cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable, "SUITE_WORK": "work"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "results.jsonl").is_file() and (tmp_path / "work").is_dir()
    assert json.loads(done.stdout.splitlines()[-1])["work"] == str(tmp_path / "work")


def test_an_interpreter_without_torch_is_one_line_and_exit_2(tmp_path):
    bare = tmp_path / "python"  # Python, isolated from site-packages and PYTHONPATH: no torch
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out"), "--cpu"],
        env={**os.environ, "PYTHON": str(bare), "SUITE_WORK": str(tmp_path / "work")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {bare} cannot import torch; set PYTHON to an interpreter with torch 2.4 or "
        "later (bash scripts/setup.sh makes .venv/bin/python)"
    ]
