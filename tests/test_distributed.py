"""Several processes on the CPU (gloo), started with torchrun through `train --gpus 2 device=cpu`:
the same losses as one process, exact resume after SIGTERM or a dead rank, at the same or
another world size, and FSDP checkpoints that one process can load.

Tolerance: float32 with rtol 1e-5. Two ranks each average their half of the batch and the
all-reduce averages the halves, where one process averages the whole batch at once: the same
sums in another order, so results may differ in the last bits (float32 epsilon is 1.2e-7) and
those differences grow a little through 40 Adam steps. A wrong data order or a missed gradient
changes the loss in the third or fourth digit, far above 1e-5."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hellolondon.config import build_config
from hellolondon.errors import UserError
from hellolondon.rundir import read_jsonl
from hellolondon.train import checkpoint
from hellolondon.train.distributed import Dist, resume_batch, split_batch
from hellolondon.train.loop import train
from hellolondon.train.run import config_for_resume
from hellolondon.train.torchrun import free_port

STEPS = 40
RTOL = 1e-5
# 2 layers, 64 wide, context 32, vocabulary 256; a schedule that ends at STEPS whatever
# max_iters is, so a run stopped early and resumed follows the reference's learning rates
SETTINGS = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=32",
    "train.optimizer=adamw",  # FSDP cannot shard Muon's matrices
    "train.schedule=cosine",
    "train.lr=1e-2",
    "train.min_lr=1e-3",
    "train.warmup_iters=2",
    f"train.lr_decay_iters={STEPS}",
    "train.log_interval=1",
    "train.eval_interval=8",
    "train.eval_iters=3",
    "train.ckpt_interval=4",
    "train.keep_last=20",
    "train.sample_interval=0",
    "train.device=cpu",
    "train.dtype=float32",
    "tracking.wandb_mode=disabled",
    "monitor.enabled=false",
]
PER_RANK_BATCH = 8


def make_tokens(folder: Path, vocab: int = 256) -> Path:
    """train.bin/val.bin of a learnable sequence (a cycle with 20% noise) and its meta.json."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": 60_000, "val": 6_000}
    for split, n in sizes.items():
        cycle = (np.arange(n) * 7) % vocab
        noise = rng.integers(0, vocab, n)
        np.where(rng.random(n) < 0.2, noise, cycle).astype(np.uint16).tofile(
            folder / f"{split}.bin"
        )
    meta = {
        "vocab_size": vocab,
        "tokenizer_fingerprint": "test-tokens",
        "train_tokens": sizes["train"],
        "val_tokens": sizes["val"],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "hellolondon", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def two_ranks(data: Path, out: Path, name: str, *extra: str) -> subprocess.Popen:
    return cli(
        "train",
        "--gpus",
        "2",
        "--data",
        str(data),
        "--out-dir",
        str(out),
        "--run-name",
        name,
        *SETTINGS,
        f"train.batch_size={PER_RANK_BATCH}",
        *extra,
        cwd=out,
    )


def losses(run_dir: Path) -> dict[int, float]:
    return {
        r["step"]: r["train/loss"]
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if "train/loss" in r
    }


def assert_same_losses(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose(
        [got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=RTOL
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the test could act:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def rank_pid(out: Path, rank: int) -> int:
    """The process of one rank of the run under `out` (torchrun starts them as python -u -m)."""
    found = subprocess.run(
        ["pgrep", "-f", "python[0-9.]* -u -m hellolondon train"],
        capture_output=True,
        text=True,
    )
    for pid in map(int, found.stdout.split()):
        with contextlib.suppress(OSError):  # another test's process that ended meanwhile
            if os.readlink(f"/proc/{pid}/cwd") != str(out):
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return pid
    raise AssertionError(f"no rank {rank} among {found.stdout.split()}")


def weights_of(run: Path) -> tuple[dict, dict]:
    """The weights and state.json of the checkpoint a run continues from."""
    ckpt = checkpoint.resolve(run)
    return checkpoint.load_weights(ckpt), checkpoint.read_state(ckpt)


def has_fully_shard() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def tokens(made_once) -> Path:
    return made_once("distributed-tokens", make_tokens)


@pytest.fixture(scope="module")
def reference(tokens, made_once) -> Path:
    """An uninterrupted two-process run of STEPS steps: the losses every other run must give."""

    def make(out: Path) -> Path:
        proc = two_ranks(tokens, out, "ref", f"train.max_iters={STEPS}")
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, log
        assert (
            "global batch: 8 x 1 accumulation x 2 processes = 16 sequences = 512 tokens per step (DDP on cpu)"
            in log
        )
        assert "$ torchrun --nnodes=1 --nproc-per-node=2" in log
        assert log.count("done: 40 iterations") == 1  # rank 0 alone reports
        return out / "ref"

    return made_once("distributed-reference", make)


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_with_twice_the_batch_or_accumulation(
    reference, tokens, tmp_path
):
    rows = read_jsonl(reference / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
    last = [r for r in rows if "train/loss" in r][-1]
    assert last["train/tokens_per_sec_per_gpu"] == pytest.approx(last["train/tokens_per_sec"] / 2)
    assert last["train/tflops_per_gpu"] == pytest.approx(last["train/tflops"] / 2)
    want = losses(reference)
    assert want[STEPS] < want[1] - 1.0  # it learns, so the comparison means something
    # each rank records the command typed, not its own (which names a temporary file)
    command = json.loads((reference / "config.json").read_text())["reproduce"]["command"]
    assert command.startswith("python -m hellolondon train --gpus 2 --data ")
    assert "--resolved-config" not in command
    for name, split in (
        ("double", ["train.batch_size=16"]),
        ("accum", ["train.batch_size=8", "train.grad_accum=2"]),
    ):
        cfg = build_config(
            "tiny",
            overrides=[
                *SETTINGS,
                *split,
                f"train.max_iters={STEPS}",
                f"data.data_dir={tokens}",
                f"out_dir={tmp_path}",
                f"tracking.run_name={name}",
            ],
        )
        train(cfg, log=lambda *_: None)
        assert_same_losses(losses(tmp_path / name), want)
    evals = [
        r["eval/val_loss"]
        for r in read_jsonl(tmp_path / "accum" / "metrics.jsonl")
        if "eval/val_loss" in r
    ]
    ref_evals = [r["eval/val_loss"] for r in rows if "eval/val_loss" in r]
    np.testing.assert_allclose(
        evals, ref_evals, rtol=RTOL
    )  # same held-out batches, split over ranks


@pytest.mark.slow
def test_a_sigint_to_the_launcher_alone_stops_the_ranks_as_one_process(tokens, tmp_path):
    """`kill -INT` (an IDE's stop button), not a terminal's Ctrl-C: torchrun did not get it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    argv = ["train", "--gpus", "2", "--data", str(tokens), "--out-dir", str(tmp_path),
            "--run-name", "int", *SETTINGS, f"train.batch_size={PER_RANK_BATCH}",
            "train.max_iters=100000"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "hellolondon", *argv], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
        start_new_session=True,  # no terminal whose Ctrl-C torchrun would have got as well
    )  # fmt: skip
    run = tmp_path / "int"
    wait_for(lambda: len(losses(run)) >= 3 if (run / "metrics.jsonl").exists() else False, proc)
    os.kill(proc.pid, signal.SIGINT)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, log
    stopped = max(losses(run))
    assert f"stopped by SIGINT after checkpoint {run / 'checkpoints'}" in log
    assert checkpoint.resolve(run).name == f"step-{stopped:06d}"


@pytest.mark.slow
def test_a_second_sigint_to_the_launcher_aborts_and_is_recorded_as_such(tokens, tmp_path):
    """The second SIGINT kills torchrun and the ranks at once: the command says "interrupted"
    with exit code 130 as one process does, and the run is recorded as aborted, not killed."""
    from hellolondon.rundir import RunDir

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    argv = ["train", "--gpus", "2", "--data", str(tokens), "--out-dir", str(tmp_path),
            "--run-name", "abort", *SETTINGS, f"train.batch_size={PER_RANK_BATCH}",
            "train.max_iters=100000", "train.ckpt_interval=0", "train.eval_interval=0",
            "model.n_embd=256", "model.block_size=128"]  # fmt: skip  # steps long enough to cut
    proc = subprocess.Popen(
        [sys.executable, "-m", "hellolondon", *argv], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
        start_new_session=True,
    )  # fmt: skip
    run = tmp_path / "abort"
    wait_for(lambda: len(losses(run)) >= 3 if (run / "metrics.jsonl").exists() else False, proc)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.05)  # two signals at once would be taken as one
    os.kill(proc.pid, signal.SIGINT)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, log
    assert log.rstrip().endswith("interrupted") and "Traceback" not in log
    state, detail = RunDir(run).status()
    assert state == "aborted" and detail.startswith("by a second Ctrl-C at step "), detail
    assert int(detail.rsplit(" ", 1)[1]) >= 3


@pytest.mark.slow
def test_a_killed_torchrun_is_waited_out_and_the_newest_checkpoint_named(tokens, tmp_path):
    """torchrun SIGKILLed: its ranks get SIGTERM and save a checkpoint. The launcher returns
    only after them, and names that checkpoint, not the one before."""
    from hellolondon.train.torchrun import _descendants

    proc = two_ranks(tokens, tmp_path, "kt", "train.max_iters=100000")
    run = tmp_path / "kt"
    wait_for(lambda: (run / "checkpoints" / "step-000004").is_dir(), proc)
    below = _descendants(proc.pid)
    rank = b"\0-u\0-m\0hellolondon\0train\0"  # how torchrun starts them (see rank_pid)
    ranks = [pid for pid in below if rank in Path(f"/proc/{pid}/cmdline").read_bytes()]
    torchrun = below[0]  # the launcher's one child; the ranks are its
    assert torchrun not in ranks and len(ranks) == 2
    os.kill(torchrun, signal.SIGKILL)
    log = proc.communicate(timeout=90)[0]
    assert proc.returncode == 1
    assert all(not Path(f"/proc/{pid}").exists() for pid in ranks)  # none writes on after it
    newest = checkpoint.resolve(run)
    assert f"error: distributed training ended: torchrun was killed by SIGKILL; the last " \
        f"complete checkpoint is {newest}" in log  # fmt: skip
    assert log.rstrip().endswith(f"continue with: hellolondon train --gpus 2 --resume {run}")


@pytest.mark.slow
def test_sigterm_checkpoints_flushes_and_resumes_to_the_same_losses(reference, tokens, tmp_path):
    proc = two_ranks(tokens, tmp_path, "term", "train.max_iters=100000")
    run = tmp_path / "term"
    wait_for(lambda: len(losses(run)) >= 3 if (run / "metrics.jsonl").exists() else False, proc)
    proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler does; torchrun passes it on
    log = proc.communicate(timeout=60)[0]
    stopped = max(losses(run))
    assert stopped < STEPS, "the run went past the reference before the signal landed"
    assert proc.returncode == 0, log  # stopped as asked, as one process does: nothing failed
    assert "error" not in log and "Traceback" not in log
    assert f"stopped by SIGTERM after checkpoint {run / 'checkpoints'}" in log
    assert f"continue with: hellolondon train --gpus 2 --resume {run}" in log
    assert "go on with: hellolondon train --resume" not in log  # the launcher's line alone
    assert checkpoint.resolve(run).name == f"step-{stopped:06d}"  # saved after the last logged step
    checkpoint.read_state(checkpoint.resolve(run))  # every file matches its sha256
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["iterations"] == stopped

    again = cli(
        "train",
        "--gpus",
        "2",
        "--resume",
        str(run),
        "--data",
        str(tokens),
        f"train.max_iters={STEPS}",
        cwd=tmp_path,
    )
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log
    assert f"resumed from {run / 'checkpoints' / f'step-{stopped:06d}'}" in log
    assert_same_losses(losses(run), losses(reference))


@pytest.mark.slow
def test_a_dead_rank_ends_the_job_and_one_process_resumes_its_checkpoint(
    reference, tokens, tmp_path
):
    proc = two_ranks(tokens, tmp_path, "dead", "train.max_iters=100000")
    run = tmp_path / "dead"
    wait_for(lambda: (run / "checkpoints" / "step-000004").is_dir(), proc)
    t0 = time.monotonic()
    os.kill(rank_pid(tmp_path, rank=1), signal.SIGKILL)
    log = proc.communicate(timeout=90)[0]
    assert time.monotonic() - t0 < 60  # the survivor does not wait out the collective timeout
    assert proc.returncode != 0
    assert "error: distributed training failed" in log and "the last complete checkpoint is" in log
    assert "Root Cause" in log and "Traceback" not in log  # torchrun's table, not its stack
    # the survivor names the rank that died without a word, not its own broken connection
    assert "error: another rank ended without an error of its own (killed by a signal" in log
    failed = json.loads((run / "process.json").read_text())["failed"]
    assert failed.startswith("lost rank at step ") and "gloo" not in failed
    ckpt, state = checkpoint.find_resumable(run)
    assert checkpoint.resolve(run) == ckpt  # `latest` names a complete, verified folder
    assert state["world_size"] == 2 and state["step"] < STEPS

    # one process takes over: the global batch of 16 becomes 8 x 2 accumulation steps
    said: list[str] = []
    cfg = config_for_resume(str(run), None, [f"train.max_iters={STEPS}"])
    train(cfg, resume=str(run), log=said.append)
    assert any("global batch 16 kept as batch_size 8 x grad_accum 2 x 1 process" in s for s in said)
    assert_same_losses(losses(run), losses(reference))


# Loaded by the ranks through PYTHONPATH: rank 1 fails as a GPU out of memory does, at step 5.
FAIL_ON_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import hellolondon.train.loop as loop
    step, calls = loop.train_step, [0]
    def train_step(run, stop):
        calls[0] += 1
        if calls[0] == 6:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(run, stop)
    loop.train_step = train_step
"""


@pytest.mark.slow
def test_the_failing_ranks_own_error_is_named_not_the_connection_the_others_lost(
    tokens, tmp_path, monkeypatch
):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(FAIL_ON_RANK_1)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "inject"))
    proc = two_ranks(tokens, tmp_path, "oom", "train.max_iters=100000")
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    # the ranks' stdout and stderr share the pipe: a line may start after another's text
    errors = re.findall(r"error: [^\n]*", log)
    assert errors[0].startswith("error: rank 1: RuntimeError: CUDA out of memory"), log
    assert errors[1] == (
        "error: rank 1 failed at step 5 (RuntimeError: CUDA out of memory. Tried to allocate "
        "2.00 GiB); rank 0 stopped with it"
    )
    assert not any("gloo" in line or "peer" in line for line in errors)
    run = tmp_path / "oom"
    assert json.loads((run / "process.json").read_text())["failed"] == (
        "RuntimeError at step 5 on rank 1"
    )
    finding = read_jsonl(run / "events.jsonl")[-1]
    assert finding["title"] == "out of memory" and finding["text"].startswith("rank 1: CUDA out")


@pytest.mark.slow
@pytest.mark.skipif(not has_fully_shard(), reason="FSDP2 (fully_shard) needs torch >= 2.6")
def test_fsdp_resumes_a_ddp_checkpoint_and_saves_one_that_one_process_loads(
    reference, tokens, tmp_path
):
    run = tmp_path / "sharded"
    shutil.copytree(reference, run)
    for old in checkpoint.step_dirs(run / "checkpoints"):
        if old.name != "step-000024":
            shutil.rmtree(old)
    (run / "checkpoints" / "latest").write_text("step-000024")
    proc = cli(
        "train",
        "--gpus",
        "2",
        "--resume",
        str(run),
        "--data",
        str(tokens),
        "train.fsdp=true",
        cwd=tmp_path,
    )
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    assert "(FSDP on cpu)" in log
    assert_same_losses(losses(run), losses(reference))
    sharded, state = weights_of(run)  # one process, no process group
    plain, _ = weights_of(reference)
    assert state["step"] == STEPS and state["config"]["train"]["fsdp"] is True
    assert sharded.keys() == plain.keys()
    for name, a in sharded.items():
        torch.testing.assert_close(a, plain[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("message", "lost"),
    [
        ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer", True),
        ("[gloo/transport/tcp/pair.cc:598] Read error [10.0.0.2]: Connection reset by peer", True),
        ("NCCL error: remote process exited or there was a network error, ncclRemoteError", True),
        ("NCCL communicator was aborted on rank 0.", True),
        ("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error (run with "
         "NCCL_DEBUG=INFO for details), NCCL version 2.21.5", False),
        ("CUDA error: an illegal memory access was encountered", False),
        ("[gloo] unsupported reduction on this tensor type", False),
    ],
)  # fmt: skip
def test_a_peers_lost_connection_is_told_from_a_ranks_own_backend_error(message, lost):
    """A rank's own NCCL or CUDA fault is its error to record, for rank 0 to name; only a
    broken connection to a peer points at another rank's error."""
    from hellolondon.train.distributed import lost_a_peer

    assert lost_a_peer(RuntimeError(message)) is lost


@pytest.mark.parametrize(
    ("message", "gist"),
    [
        ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
         "[127.0.0.1]:4504: Connection reset by peer. This is typically caused by a peer that "
         "exited or crashed",
         "RuntimeError: Read error [127.0.0.1]:4504: Connection reset by peer"),
        ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
         "[127.0.0.1]:29500", "RuntimeError: Connection closed by peer [127.0.0.1]:29500"),
        ("NCCL communicator was aborted on rank 0.", "RuntimeError: NCCL communicator was "
         "aborted on rank 0."),
    ],
)  # fmt: skip
def test_a_lost_connection_is_quoted_without_source_paths_or_cut_words(message, gist):
    """The survivors' line quotes what they saw in a few whole words, not the path of the
    backend's source file and a sentence cut in the middle."""
    from hellolondon.train.failure import connection_gist

    assert connection_gist("RuntimeError", message) == gist
    long = connection_gist("RuntimeError", "word " * 100)
    assert len(long) <= 160 and long.endswith("word...")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_launcher_waits_for_a_left_rank_but_not_for_a_pid_reused_since():
    import threading

    from hellolondon.train.torchrun import _started, _wait_for, _zombie

    # a process that is not our child, as a rank is once torchrun is gone (without a subreaper)
    out = subprocess.run(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    pid = int(out.stdout)
    try:
        t0 = time.monotonic()
        _wait_for({pid: "1"})  # noted with another start time: that process is gone
        assert time.monotonic() - t0 < 1.0
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        _wait_for({pid: _started(pid)})  # the same process: waited for until it ends
        assert 0.4 < time.monotonic() - t0 < 10
        assert _started(pid) is None or _zombie(pid)  # ended (maybe not yet reaped by init)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_same_global_batch_evaluates_the_same_sequences_on_any_world_size():
    from hellolondon.config import build_config
    from hellolondon.train.resolve import resolve_config

    cfg = build_config("tiny", overrides=["train.eval_iters=2"])
    seqs = {
        world: resolve_config(
            cfg, world=world, meta={"vocab_size": 512}, global_batch=16, log=lambda *_: None
        ).train
        for world in (1, 2, 4)
    }
    assert [(t.batch_size, t.grad_accum) for t in seqs.values()] == [(16, 1), (8, 1), (4, 1)]
    accum = resolve_config(
        build_config("tiny", overrides=["train.eval_iters=2", "train.batch_size=8"]),
        world=1, meta={"vocab_size": 512}, global_batch=16, log=lambda *_: None,
    ).train  # fmt: skip
    assert (accum.batch_size, accum.grad_accum) == (8, 2)
    assert {t.eval_seqs for t in [*seqs.values(), accum]} == {32}  # eval_iters global batches


def test_split_batch_keeps_the_global_batch_or_refuses():
    assert split_batch(16, 2, max_batch=8) == (8, 1)
    assert split_batch(16, 1, max_batch=8) == (8, 2)
    assert split_batch(12, 4, max_batch=2) == (1, 3)  # 3 per process: 2 does not divide it
    with pytest.raises(UserError, match="cannot be split evenly over 3 processes"):
        split_batch(16, 3, max_batch=8)


def _state(batch: int, accum: int, world: int) -> dict:
    return {
        "config": {"train": {"batch_size": batch, "grad_accum": accum}},
        "world_size": world,
        "trainer": {"samples_seen": 640},
    }


def one_process(tokens: Path, out: Path, name: str, *extra: str) -> Path:
    """A short run in this process, without a process group."""
    cfg = build_config(
        "tiny",
        overrides=[*SETTINGS, f"data.data_dir={tokens}", f"out_dir={out}",
                   f"tracking.run_name={name}", *extra],
    )  # fmt: skip
    train(cfg, log=lambda *_: None)
    return out / name


def test_resume_keeps_the_global_batch_on_another_world_size():
    said: list[str] = []
    t = build_config("tiny", overrides=["train.batch_size=8", "train.grad_accum=1"]).train
    resume_batch(t, _state(8, 1, 2), world=1, log=said.append)
    assert (t.batch_size, t.grad_accum) == (8, 2) and "global batch 16 kept" in said[0]
    t = build_config("tiny", overrides=["train.batch_size=8", "train.grad_accum=1"]).train
    resume_batch(t, _state(8, 1, 1), world=4, log=said.append)
    assert (t.batch_size, t.grad_accum) == (2, 1)
    # the split `train --gpus` made before starting the ranks: rank 0 still says it
    t = build_config("tiny", overrides=["train.batch_size=8", "train.grad_accum=2"]).train
    resume_batch(t, _state(8, 1, 2), world=1, log=said.append)
    assert said[-1] == (
        "resuming a 2-process run on 1: global batch 16 kept as batch_size 8 x grad_accum 2 x 1 process"
    )
    t = build_config("tiny", overrides=["train.batch_size=8"]).train
    with pytest.raises(UserError, match="cannot be split evenly over 3"):
        resume_batch(t, _state(8, 1, 2), world=3, log=said.append)


def test_an_explicit_new_batch_on_resume_is_obeyed_and_announced():
    said: list[str] = []
    t = build_config("tiny", overrides=["train.batch_size=4", "train.grad_accum=1"]).train
    resume_batch(t, _state(8, 1, 2), world=2, log=said.append)
    assert (t.batch_size, t.grad_accum) == (4, 1)
    assert said == [
        "warning: the global batch changes from 16 to 8 sequences at sample 640; "
        "the data continues from there, none repeated or skipped"
    ]


def test_a_batch_changed_on_resume_is_announced_from_the_checkpoint(tokens, tmp_path):
    run = one_process(tokens, tmp_path, "small", "train.batch_size=4", "train.max_iters=2")
    said: list[str] = []
    cfg = config_for_resume(str(run), None, ["train.batch_size=2", "train.max_iters=3"])
    train(cfg, resume=str(run), log=said.append)
    assert (
        "warning: the global batch changes from 4 to 2 sequences at sample 8; "
        "the data continues from there, none repeated or skipped"
    ) in said
    assert checkpoint.read_state(checkpoint.resolve(run))["trainer"]["samples_seen"] == 10


def test_global_batch_on_resume_is_obeyed_and_announced(tokens, tmp_path):
    run = one_process(tokens, tmp_path, "small", "train.batch_size=4", "train.max_iters=2")
    said: list[str] = []
    cfg = config_for_resume(str(run), None, ["train.max_iters=3"])
    train(cfg, resume=str(run), log=said.append, global_batch=12)
    assert "global batch: 4 x 3 accumulation x 1 process = 12 sequences" in " ".join(said)
    assert any("the global batch changes from 4 to 12 sequences at sample 8" in s for s in said)
    with pytest.raises(UserError, match="must be at least 1"):
        train(config_for_resume(str(run), None, []), resume=str(run), global_batch=0)


def test_rank_generators_are_saved_per_rank_and_restored_per_rank():
    per_rank = [{"torch": torch.manual_seed(r).get_state()} for r in (1, 2)]
    saved = checkpoint.rng_tensors(per_rank)
    as_json = checkpoint.rng_state()
    checkpoint.set_rng_state(as_json, saved, rank=1, world=2)
    assert torch.equal(torch.get_rng_state(), per_rank[1]["torch"])
    checkpoint.set_rng_state(as_json, saved, rank=0, world=2)
    first = torch.rand(3)
    checkpoint.set_rng_state(as_json, saved, rank=1, world=3)  # another world: a derived stream
    assert not torch.equal(torch.rand(3), first)


def test_one_process_needs_no_process_group():
    from hellolondon.train.distributed import init_distributed

    d = init_distributed("cpu", fsdp=True)
    assert d == Dist(device=torch.device("cpu")) and not d.fsdp  # nothing to shard on one process


@pytest.mark.slow
def test_muon_under_ddp_gives_the_losses_of_one_process_with_twice_the_batch(tokens, tmp_path):
    muon = ["train.optimizer=muon", "train.schedule=wsd", f"train.max_iters={STEPS}"]
    proc = two_ranks(tokens, tmp_path, "ddp", *muon)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    cfg = build_config(
        "tiny",
        overrides=[*SETTINGS, *muon, "train.batch_size=16", f"data.data_dir={tokens}",
                   f"out_dir={tmp_path}", "tracking.run_name=one"],
    )  # fmt: skip
    train(cfg, log=lambda *_: None)
    want = losses(tmp_path / "ddp")
    assert want[STEPS] < want[1] - 1.0  # it learns, so the comparison means something
    got = losses(tmp_path / "one")
    assert sorted(got) == sorted(want)
    # as AdamW's runs above: on the CPU Newton-Schulz runs in float32, so a gradient summed in
    # another order shows only at float32 rounding (in bfloat16 it showed at about 1e-4)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                               rtol=1e-5)  # fmt: skip


def test_a_bad_setting_under_torchrun_is_said_once_not_once_per_rank(tokens, tmp_path):
    """Every rank meets it at once; the machine's first rank says it, torchrun ends the rest."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    started = time.monotonic()
    for bad in (["train.lr=abc"], ["--no-such-flag"]):
        proc = subprocess.run(
            [*torchrun, "--master-port", str(free_port()), "-m", "hellolondon", "train"]
            + ["--data", str(tokens), "--out-dir", str(tmp_path), *SETTINGS, *bad],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode != 0
        said = proc.stderr.count("error: train.lr:") + proc.stderr.count("unrecognized arguments")
        assert said == 1, proc.stderr
    assert time.monotonic() - started < 60  # no rank waits out a timeout
    assert not any(tmp_path.iterdir())  # no run folder was started


def test_an_error_of_one_rank_alone_is_still_said(monkeypatch, capsys):
    """A rank other than the machine's first prints its error once it is clear that no other
    rank ended the job with it (torchrun would have stopped this one by then)."""
    from hellolondon import cli

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(cli, "ECHO_WAIT_S", 0.01)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # leave pytest's handlers be
    assert cli.main(["train", "train.lr=abc"]) == 2
    assert capsys.readouterr().err.count("error: train.lr") == 1


@pytest.mark.parametrize(
    ("distributed", "log_interval", "said"),
    [(True, 20, "at most 20 more steps"), (True, 1, "this step"), (False, 20, "this step")],
)
def test_a_signal_says_how_far_training_goes_on_before_it_stops(
    distributed, log_interval, said, capsys
):
    """Several ranks agree on a stop only where they read their step results (every
    `log_interval` steps at most), so rank 0 must not promise to stop after this very step."""
    from hellolondon.train.signals import StopSignal

    stop = StopSignal(distributed=distributed)
    try:
        stop.training(log_interval)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        stop.restore()
    assert f"SIGTERM: stopping after {said} and saving a checkpoint" in capsys.readouterr().out
    assert stop.pending and stop.requested is not distributed


@pytest.mark.parametrize("device, made_current", [("cuda:1", [1]), ("cuda", []), ("cpu", [])])
def test_one_process_on_a_named_gpu_makes_it_the_current_device(monkeypatch, device, made_current):
    """A plain run on cuda:1 sets GPU 1 current, as torchrun's ranks set theirs: what asks the
    current device (kernels, contexts, the bf16 check) then works on that GPU, not GPU 0."""
    from hellolondon.train import distributed

    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(distributed, "resolve_device", torch.device)
    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(d.index))
    d = distributed.init_distributed(device)
    assert d.device == torch.device(device) and not d.enabled and current == made_current
