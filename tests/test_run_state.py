"""The run folder and the training state around resume: what a restart must keep, cut, choose
and refuse. Each test names the wrong behaviour it guards against."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tinyrun import tiny_config

from hellolondon.cli import main
from hellolondon.rundir import RunDir, read_jsonl
from hellolondon.train import checkpoint
from hellolondon.train.loop import train
from hellolondon.train.run import config_for_resume


def quiet(*_: object) -> None:
    pass


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in RunDir(run).rows() if "train/loss" in r}


def resume(run: Path, *overrides: str, log=quiet) -> dict:
    return train(config_for_resume(str(run), None, list(overrides)), resume=str(run), log=log)


def test_the_first_step_time_leaves_out_the_untrained_evaluation(tiny_data, tmp_path, monkeypatch):
    from hellolondon.train import loop

    real = loop.evaluate

    def slow_evaluate(run):
        time.sleep(1.0)
        return real(run)

    monkeypatch.setattr(loop, "evaluate", slow_evaluate)
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=t", "train.max_iters=3")
    train(cfg, log=quiet)
    first = next(r for r in RunDir(tmp_path / "t").rows() if "train/dt_ms" in r)
    assert first["train/dt_ms"] < 500  # the 1 s evaluation before step 1 is not in it


def test_a_half_written_last_line_does_not_swallow_the_next_row(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=h"), log=quiet)
    run = RunDir(tmp_path / "h")
    for path in (run.metrics_file, run.events_file):
        with open(path, "a", encoding="utf-8") as f:
            f.write('{"step": 13, "train/lo')  # a kill in the middle of a write
    resume(run.path, "train.max_iters=18")
    steps = [r["step"] for r in run.rows() if "train/loss" in r]
    assert steps == list(range(1, 19))  # step 13 is there once, nothing lost or doubled
    assert all(line.endswith("}") for line in run.metrics_file.read_text().splitlines())


def test_resume_cuts_events_back_to_the_checkpoint_so_findings_do_not_repeat(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=e", "monitor.enabled=true")
    train(cfg, log=quiet)
    run = RunDir(tmp_path / "e")
    with open(run.events_file, "a", encoding="utf-8") as f:  # logged after the last checkpoint
        f.write(json.dumps({"step": 99, "level": "WARN", "title": "late", "text": "x"}) + "\n")
    ckpt = run.checkpoints / "step-000006"
    resume(ckpt)
    assert all(e["step"] <= 12 for e in run.events())
    assert not any(e["title"] == "late" for e in run.events())


def test_plain_resume_continues_from_latest_not_the_highest_step(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=l", "train.keep_last=3")
    train(cfg, log=quiet)  # checkpoints at 6 and 12
    run = RunDir(tmp_path / "l")
    resume(run.checkpoints / "step-000006", "train.max_iters=9", "train.ckpt_interval=3")
    assert (run.checkpoints / "latest").read_text() == "step-000009"
    assert (run.checkpoints / "abandoned" / "step-000012").is_dir()  # kept, out of the way
    assert checkpoint.resolve(run.path).name == "step-000009"
    said: list[str] = []
    resume(run.path, "train.max_iters=10", log=said.append)
    assert any("resumed from" in s and "step-000009" in s for s in said)


def test_best_goes_back_to_the_continued_lines_own_best(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=b", "train.keep_last=3")
    train(cfg, log=quiet)  # checkpoints at 6 and 12, best/ = step 12
    run = RunDir(tmp_path / "b")
    best = run.checkpoints / "best"
    assert checkpoint.read_state(best)["step"] == 12
    said: list[str] = []
    # a new line from 6 that evaluates nothing better than 6's own: "lr" far too high
    resume(
        run.checkpoints / "step-000006",
        "train.max_iters=9",
        "train.lr=5",
        "train.muon_lr=50",
        "train.eval_interval=3",
        "train.ckpt_interval=3",
        log=said.append,
    )
    summary = json.loads(run.summary_file.read_text())
    assert summary["best_step"] == 6
    assert checkpoint.read_state(best)["step"] == 6  # not the abandoned line's step 12
    kept = run.checkpoints / "abandoned" / "best-step-000012"
    assert checkpoint.read_state(kept)["step"] == 12  # set aside, not lost
    assert any("best/ was step 12's" in s for s in said)


def test_an_evaluation_of_the_abandoned_line_leaves_the_summary(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=v", "train.keep_last=3"), log=quiet)
    run = RunDir(tmp_path / "v")
    assert main(["eval", str(run.path), "--no-probes", "--gen-tokens", "4"]) == 0  # step 12
    assert json.loads(run.summary_file.read_text())["eval/iter"] == 12
    resume(run.checkpoints / "step-000006", "train.max_iters=9")
    summary = json.loads(run.summary_file.read_text())
    assert summary.get("eval/val_bpb") is None and summary.get("eval/iter") is None
    assert summary["iterations"] == 9


def test_pruning_keeps_the_checkpoint_just_written_over_a_newer_abandoned_one(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=p", "train.keep_last=1")
    train(cfg, log=quiet)
    run = RunDir(tmp_path / "p")
    shutil.copytree(run.checkpoints / "step-000012", run.checkpoints / "step-000030")
    (run.checkpoints / "step-000030" / "model.safetensors").write_bytes(b"corrupt")
    (run.checkpoints / "latest").write_text("step-000030")
    resume(run.path, "train.max_iters=18")  # falls back past the corrupt 30, continues from 12
    kept = [p.name for p in checkpoint.step_dirs(run.checkpoints)]
    assert kept == ["step-000018"]
    checkpoint.read_state(run.checkpoints / "step-000018")  # the good one, verified


def test_a_corrupt_state_json_falls_back_to_the_previous_checkpoint(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=s", "train.keep_last=3")
    train(cfg, log=quiet)
    run = RunDir(tmp_path / "s")
    state = run.checkpoints / "step-000012" / "state.json"
    state.write_text(state.read_text()[: len(state.read_text()) // 2])  # truncated
    said: list[str] = []
    resume(run.path, "train.max_iters=14", log=said.append)
    assert any("falling back" in s and "not valid JSON" in s for s in said)
    assert any("resumed from" in s and "step-000006" in s for s in said)


def test_the_summary_and_the_monitor_cover_the_whole_run_after_resume(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=w", "monitor.enabled=true")
    whole = train(cfg, log=quiet)
    first = whole["first_val_loss"]
    (tmp_path / "w" / "summary.json").unlink()
    later = resume(tmp_path / "w", "train.max_iters=18")
    assert later["first_val_loss"] == first  # the untrained loss, from the first part
    assert later["wall_time_s"] > whole["wall_time_s"] and later["starts"] == 2
    state = checkpoint.read_state(checkpoint.resolve(tmp_path / "w"))
    assert state["monitor"]["_rows"] == 18  # every train row of the run, not the last 6


def test_a_checkpoint_outside_its_run_folder_starts_a_run_folder_of_its_own(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "runs", "tracking.run_name=a"), log=quiet)
    loose = tmp_path / "kept" / "step-000012"
    shutil.copytree(tmp_path / "runs" / "a" / "checkpoints" / "step-000012", loose)
    cfg = config_for_resume(str(loose), None, [f"out_dir={tmp_path / 'runs'}", "max_iters=14"])
    summary = train(cfg, resume=str(loose), log=quiet)
    assert Path(summary["run_dir"]).parent == tmp_path / "runs"
    assert Path(summary["run_dir"]).name != "a"
    assert (
        not (tmp_path / "kept" / "metrics.jsonl").exists()
        and not (tmp_path / "config.json").exists()
    )
    assert sorted(losses(Path(summary["run_dir"]))) == [13, 14]


def test_train_refuses_token_files_whose_tokenizer_has_changed(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    tok = tmp_path / "tok"
    shutil.copytree(tiny_data.parent / "tokenizer", tok)
    meta = json.loads((data / "meta.json").read_text())
    meta["tokenizer_path"] = str(tok)
    (data / "meta.json").write_text(json.dumps(meta))
    spec = json.loads((tok / "tokenizer.json").read_text())
    spec["model"]["vocab"]["zzzz"] = len(spec["model"]["vocab"])  # trained again since
    (tok / "tokenizer.json").write_text(json.dumps(spec))
    argv = [
        "train",
        "--data",
        str(data),
        "--out-dir",
        str(tmp_path / "runs"),
        "max_iters=1",
        "warmup_iters=0",
    ]
    assert main(argv) == 2
    assert "has changed since the token files" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_fp16_resume_of_a_checkpoint_without_a_loss_scale_starts_one():
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    notes: list[str] = []
    checkpoint._load_scaler(scaler, {}, notes.append)  # what a bf16 or fp32 run saved
    assert notes and "starting one" in notes[0]
    assert scaler.get_scale() == 2.0**16


def test_the_held_out_set_is_fixed_for_the_run_whatever_the_batch_split(tiny_data, tmp_path):
    from hellolondon.train.run import setup_run
    from hellolondon.train.steps import _eval_split

    values = []
    for batch in (4, 3):
        cfg = tiny_config(
            tiny_data, tmp_path, f"tracking.run_name=b{batch}", "eval_seqs=8", f"batch_size={batch}"
        )
        run = setup_run(cfg, log=quiet)
        values.append(_eval_split(run, "val"))
        run.tracker.finish()
    assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_an_fsdp_rank_with_no_held_out_sequences_still_makes_the_others_calls(
    tiny_data, tmp_path, monkeypatch
):
    """With fewer held-out sequences than ranks, a rank's share is empty; under FSDP it must
    still run as many forwards as the others (each gathers weights), counting none of them."""
    import dataclasses

    from hellolondon.train import steps
    from hellolondon.train.run import setup_run

    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=f", "eval_seqs=2", "batch_size=1")
    run = setup_run(cfg, log=quiet)
    run.tracker.finish()
    run.dist = dataclasses.replace(run.dist, rank=3, world_size=4, fsdp=True)
    calls = []
    forward = run.model.forward
    monkeypatch.setattr(run.model, "forward", lambda x, y: calls.append(len(x)) or forward(x, y))
    sums = []
    monkeypatch.setattr(steps, "all_reduce_mean", lambda t, d: sums.append(t.clone()) or t)
    steps._eval_split(run, "val")
    assert calls == [1]  # one call, as the ranks that hold a sequence make
    assert sums[0].tolist() == [0.0, 0.0]  # and nothing of it in the sums


def test_the_stop_policy_on_a_nonfinite_loss_is_an_early_stop_and_an_error(
    tiny_data, tmp_path, monkeypatch, capsys
):
    from hellolondon.model import GPT

    real = GPT.forward

    def poisoned(self, idx, targets=None, cache=None):
        logits, loss = real(self, idx, targets, cache)
        return logits, (loss * float("nan") if self.training and targets is not None else loss)

    monkeypatch.setattr(GPT, "forward", poisoned)
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--run-name", "n"]
    argv += ["train.nonfinite=stop", "max_iters=4", "warmup_iters=1", "n_layer=1", "n_embd=16"]
    argv += ["block_size=16"]
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert "non-finite loss" in err and "done:" not in out  # an error, not a finished run
    summary = RunDir(tmp_path / "n").read_summary()
    assert summary["stopped_early"] is True and summary["stop_reason"] == "non-finite loss"


def test_a_gpu_preset_on_a_cpu_says_how_long_it_will_take_before_the_first_step(
    tiny_data, tmp_path, monkeypatch
):
    from hellolondon import hardware

    monkeypatch.setattr(hardware, "cpu_matmul_flops", lambda *shape: 1e6)  # a very slow CPU
    said: list[str] = []
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=g", "max_iters=1", "warmup_iters=0")
    train(cfg, log=said.append)
    line = next(s for s in said if s.startswith("estimated"))
    assert "per step" in line and "a smaller model or batch" in line  # already the tiny preset
    assert said.index(line) < next(i for i, s in enumerate(said) if s.startswith("iter 1"))


def test_train_config_json_of_a_run_starts_a_run_with_the_same_losses(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=one"), log=quiet)
    argv = ["train", "--config", str(tmp_path / "one" / "config.json"), "--run-name", "two"]
    assert main(argv) == 0
    assert losses(tmp_path / "two") == losses(tmp_path / "one")


@pytest.mark.slow
def test_kills_in_every_phase_then_resume_give_the_uninterrupted_losses(
    tiny_data, tmp_path, capsys
):
    """SIGKILL in each phase of a run in turn (while a checkpoint is being written, during an
    evaluation, at a random moment past the furthest step so far, during the start-up), each
    followed by `train --resume RUN`: the same per-iteration losses as a run never stopped, one
    row per logged iteration, and every reader works on the result."""
    import os
    import random
    import signal
    import subprocess
    import sys
    from functools import partial

    settings = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64"]
    settings += ["train.batch_size=8", "train.max_iters=160", "train.warmup_iters=5"]
    settings += ["train.eval_interval=20", "train.eval_iters=8", "train.log_interval=1"]
    settings += ["train.ckpt_interval=10", "train.sample_interval=0", "model.dropout=0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    where = ["--data", str(tiny_data), "--out-dir", str(tmp_path)]

    def start(*args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "hellolondon", "train", *args]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    # The kill moments scale with this machine's speed: its start-up time and time per step.
    log = tmp_path / "whole" / "metrics.jsonl"
    t0 = time.monotonic()
    whole = start(*where, "--run-name", "whole", *settings)
    while whole.poll() is None and not any("train/loss" in r for r in read_jsonl(log)):
        time.sleep(0.01)
    startup = time.monotonic() - t0
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    step_s = (
        statistics.median(
            r["train/dt_ms"] for r in RunDir(tmp_path / "whole").rows() if "train/dt_ms" in r
        )
        / 1000
    )
    run = tmp_path / "killed"
    ckpts = run / "checkpoints"
    metrics = run / "metrics.jsonl"

    def logged() -> int:  # the furthest training step in the run's log
        rows = read_jsonl(metrics)
        return max((r["step"] for r in rows if "train/loss" in r), default=0)

    def written() -> tuple:  # changes with every row, and when a resume cuts the log
        st = metrics.stat() if metrics.exists() else None
        return (st.st_ino, st.st_size, st.st_mtime_ns) if st else None

    def evaluating(since: tuple) -> bool:  # a step's row is written just before its evaluation's
        rows = read_jsonl(metrics) if written() != since else []
        return bool(rows) and "train/loss" in rows[-1] and rows[-1]["step"] % 20 == 0

    def saving() -> bool:  # this process's checkpoint folder, not yet renamed into place
        return any(ckpts.glob(f".step-*.tmp-{proc.pid}")) and (ckpts / "latest").exists()

    def freeze_in(phase_now, timeout: float = 60) -> bool:
        """Wait until `phase_now()`, then stop the process (SIGSTOP) and look again: True once
        it is frozen inside the phase (it may have left it before the signal landed)."""
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            if phase_now():
                proc.send_signal(signal.SIGSTOP)
                while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] not in "TZ":
                    time.sleep(0.0005)
                if phase_now():
                    return True
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.001)
        return False

    # Three kills of each phase, in turn; 4 x 3 kills leave most of the 160 steps to go.
    phases = ["checkpoint", "evaluation", "progress", "start-up"] * 3
    rng = random.Random(20261129)
    proc = start(*where, "--run-name", "killed", *settings)
    kills = furthest = 0
    hit: list[str] = []
    for phase in phases:
        t0, before = time.monotonic(), written()
        if phase in ("checkpoint", "evaluation"):  # while this process writes a checkpoint, or
            # evaluates (the log written since it started, its last row a step due for one)
            inside = saving if phase == "checkpoint" else partial(evaluating, since=before)
            hit.append(phase if freeze_in(inside) else f"{phase} missed")
        elif phase == "start-up":  # loading, building the model, or as it writes its first row
            end = t0 + rng.uniform(0.3, 1.2) * startup
            while proc.poll() is None and time.monotonic() < end and written() == before:
                time.sleep(0.001)
        else:  # a random moment within about one interval past the furthest step so far:
            # each such kill is after some progress, however long this machine takes to start
            # a process, and in counted steps, not seconds, that may pass faster than measured
            target = furthest + rng.randint(1, 10)
            while proc.poll() is None and logged() < target and time.monotonic() - t0 < 60:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.0) * step_s)  # somewhere within the next step
        if proc.poll() is not None:  # finished before the kill: nothing left to interrupt
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        furthest = max(furthest, logged())
        proc = start("--resume", str(run))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    assert kills == len(phases), (kills, furthest, startup, step_s)
    assert hit == ["checkpoint", "evaluation"] * 3  # each such kill came inside its phase
    assert losses(run) == losses(tmp_path / "whole")  # bitwise
    rows = RunDir(run).rows()
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    eval_steps = [r["step"] for r in rows if "eval/val_loss" in r]
    assert train_steps == list(range(1, 161))
    assert eval_steps == list(range(0, 161, 20))
    for argv in (
        ["runs", "--out-dir", str(tmp_path)],
        ["report", str(run)],
        ["watch", str(run), "--once"],
        ["eval", str(run), "--no-generation", "--max-tokens", "2000", "--device", "cpu"],
        ["export", str(run), "--out", str(tmp_path / "export")],
    ):
        assert main(argv) == 0, argv
    assert "killed" in capsys.readouterr().out


def test_appending_to_a_log_cut_short_by_a_kill_starts_a_new_line(tmp_path):
    """`eval` or a tracker opened on a killed run's folder appends to its logs: the next row
    must not be glued to the half-written last line (it would be lost to every reader)."""
    from hellolondon.rundir import JsonlLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 5.0}\n{"step": 2, "train/lo')
    log = JsonlLog(path)
    log.write({"step": 2, "eval/val_loss": 4.5})
    log.close()
    assert read_jsonl(path) == [
        {"step": 1, "train/loss": 5.0},
        {"step": 2, "eval/val_loss": 4.5},
    ]


def test_pruning_never_deletes_the_checkpoint_it_has_just_written(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=k", "train.keep_last=3")
    train(cfg, log=quiet)
    root = RunDir(tmp_path / "k").checkpoints
    shutil.copytree(root / "step-000012", root / "step-000030")  # a newer folder left there
    weights = checkpoint.load_weights(root / "step-000012")
    written = checkpoint.save(root, 18, weights, {}, {"config": {}}, keep_last=1, is_best=False)
    assert written.name == "step-000018" and written.is_dir()
    assert (root / "latest").read_text() == "step-000018"
    modes = {f.name: f.stat().st_mode & 0o777 for f in written.iterdir()}
    assert modes["model.safetensors"] == modes["state.json"]  # safetensors alone wrote 0600


def test_a_folder_a_killed_save_moved_aside_is_put_back(trained_run, tmp_path):
    """Killed between its two renames, a save leaves `best` (or a step folder saved again)
    moved aside under `.NAME.old` and nothing in its place: the next save puts it back."""
    root = tmp_path / "checkpoints"
    shutil.copytree(trained_run / "checkpoints" / "step-000040", root / "step-000040")
    shutil.copytree(root / "step-000040", root / ".best.old")
    shutil.copytree(root / "step-000040", root / ".best.tmp")  # the replacement, half made
    shutil.copytree(root / "step-000040", root / ".step-000040.old")  # its folder is there
    weights = checkpoint.load_weights(root / "step-000040")
    checkpoint.save(root, 50, weights, {}, {"config": {}}, keep_last=2, is_best=False)
    assert sorted(p.name for p in root.iterdir()) == [
        "best",
        "latest",
        "step-000040",
        "step-000050",
    ]
    assert checkpoint.read_state(root / "best")["step"] == 40


def test_a_checkpoint_write_on_a_full_disk_is_named_and_gives_its_space_back(
    trained_run, tmp_path, monkeypatch
):
    root = tmp_path / "checkpoints"
    shutil.copytree(trained_run / "checkpoints" / "step-000040", root / "step-000040")
    (root / ".step-000030.tmp-99999").mkdir()  # a save killed halfway, by an earlier process
    weights = checkpoint.load_weights(root / "step-000040")

    def torch_on_a_full_disk(obj, path):  # how torch.save reports ENOSPC
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 32")

    monkeypatch.setattr(checkpoint.torch, "save", torch_on_a_full_disk)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: SimpleNamespace(free=0))
    with pytest.raises(OSError) as raised:
        checkpoint.save(root, 50, weights, {}, {"config": {}}, keep_last=2, is_best=False)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename.endswith("step-000050")
    assert sorted(p.name for p in root.iterdir()) == ["step-000040"]  # nothing half-written left


@pytest.fixture
def live_python():
    """Another live Python process: the pid a running training would have."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    for _ in range(100):  # just spawned, its command line may not be readable yet
        if not cmdline.parent.exists() or cmdline.read_bytes():
            break
        time.sleep(0.05)
    yield proc.pid
    proc.kill()
    proc.wait()


def _record(folder: Path, pid: int) -> None:
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "process.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def test_a_run_folder_another_command_is_starting_is_not_shared(tmp_path, live_python):
    from hellolondon.errors import UserError

    _record(tmp_path / "same", live_python)  # claimed, nothing written yet: the start's window
    with pytest.raises(UserError, match="already exists"):
        RunDir.create(tmp_path, "same")
    _record(tmp_path / "left", 2**22 + 1)  # a start that died before writing anything else
    run = RunDir.create(tmp_path, "left")
    assert json.loads(run.process_file.read_text())["pid"] != 2**22 + 1  # taken over


def test_resuming_a_run_that_is_training_now_is_refused(trained_run, tmp_path, live_python, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _record(run, live_python)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert main(["train", "--resume", str(run), "train.max_iters=44"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is being trained now (process {live_python})" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_resuming_a_run_training_now_before_its_first_checkpoint_says_so(
    tmp_path, live_python, capsys
):
    """Not "the run stopped before its first checkpoint": it is running, and a Ctrl-C to it
    would save one to resume from."""
    run = tmp_path / "run"
    _record(run, live_python)
    (run / "config.json").write_text("{}")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is being trained now (process {live_python})" in err
    assert "stopped" not in err and "--run-name" not in err


def test_two_resumes_at_once_cannot_both_take_the_run(trained_run, tmp_path):
    """The check for a live trainer and this process's record are one step: while another
    resume holds that step, this one is refused; after it, its record refuses the next."""
    from hellolondon.errors import UserError
    from hellolondon.files import exclusive_lock

    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_run, run.path)
    held = exclusive_lock(run.path / ".resume.lock", lambda pid: AssertionError(pid))
    with held, pytest.raises(UserError, match=r"is being resumed now \(process \d+\)"):
        run.claim_to_resume()
    run.claim_to_resume()
    assert run.training_process() == ("running", f"process {os.getpid()}")
    assert not (run.path / ".resume.lock").exists()


def test_a_tokenizer_copy_cut_short_is_made_again(tiny_data, tmp_path):
    src = tiny_data.parent / "tokenizer"
    run = RunDir(tmp_path / "run")
    run.tokenizer_dir.mkdir(parents=True)
    (run.tokenizer_dir / "vocab.json").write_text("{")  # a copy killed halfway
    run.copy_tokenizer(src)
    copied = sorted(p.name for p in run.tokenizer_dir.iterdir())
    assert copied == sorted(p.name for p in src.iterdir())
    assert (run.tokenizer_dir / "tokenizer.json").read_bytes() == (
        src / "tokenizer.json"
    ).read_bytes()
    assert [p.name for p in run.path.iterdir()] == ["tokenizer"]  # no temporary folder left


def test_a_resume_cuts_the_samples_written_after_its_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    for step in (10, 20, 30):
        run.append_sample(step, f"text at {step}\n=== iteration 99 in the text")
    run.cut_logs_after(20)  # resumed from step 20: the step-30 sample comes again
    text = run.samples_file.read_text()
    heads = [line for line in text.splitlines() if line.split()[-1:] != ["text"]]
    assert [h for h in heads if h.startswith("===")] == ["=== iteration 10", "=== iteration 20"]
    assert text.endswith("text at 20\n=== iteration 99 in the text\n\n")


def test_a_damaged_copy_of_the_runs_tokenizer_is_made_again_or_refused_before_training(
    trained_run, tmp_path, monkeypatch
):
    from hellolondon.errors import UserError
    from hellolondon.train import run as run_module

    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_run, run.path)
    good = (run.tokenizer_dir / "tokenizer.json").read_bytes()
    (run.tokenizer_dir / "tokenizer.json").write_text("{")
    resume(run.path, "train.max_iters=42")  # the data's tokenizer is there: copied again
    assert (run.tokenizer_dir / "tokenizer.json").read_bytes() == good
    (run.tokenizer_dir / "tokenizer.json").write_text("{")
    monkeypatch.setattr(run_module, "_run_tokenizer", lambda meta, data_dir: None)  # gone too
    before = {f.name: f.read_bytes() for f in run.path.iterdir() if f.is_file()}
    with pytest.raises(UserError, match="the run's copy of its tokenizer in .* is not the one"):
        resume(run.path, "train.max_iters=44")
    assert {f.name: f.read_bytes() for f in run.path.iterdir() if f.is_file()} == before


def test_a_run_whose_tokenizer_is_gone_says_so_before_training(tiny_data, tmp_path, monkeypatch):
    from hellolondon.train import run as run_module

    monkeypatch.setattr(run_module, "_run_tokenizer", lambda meta, data_dir: None)
    said: list[str] = []
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=t", "train.max_iters=2")
    train(cfg, log=said.append)
    assert any(s.startswith("warning: the tokenizer the token files in") for s in said)
    assert not (tmp_path / "t" / "tokenizer").exists()


def test_a_resume_refused_after_taking_the_run_gives_it_back_as_it_was(trained_run, tmp_path):
    from hellolondon.errors import UserError

    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_run, run.path)
    for record in (None, {"pid": 1, "host": "elsewhere", "failed": "OutOfMemoryError at step 9"}):
        if record is not None:
            run.process_file.write_text(json.dumps(record))
        before = run.status()
        with pytest.raises(UserError, match="architecture"):
            resume(run.path, "model.n_layer=3")  # refused after the run was taken
        assert run.status() == before and (record is not None) == run.process_file.exists()


def test_a_resume_is_refused_before_any_work_while_another_takes_the_run(
    trained_run, tmp_path, capsys
):
    from hellolondon.files import exclusive_lock

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with exclusive_lock(run / ".resume.lock", lambda pid: AssertionError(pid)):
        assert main(["train", "--resume", str(run), "train.max_iters=42"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: run {run} is being resumed now (process")


def _without_timing(rows: list[dict]) -> list[dict]:
    timing = ("time", "dt_ms", "per_sec", "tflops", "mfu", "epoch_time_s")
    return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows]


def test_an_evaluation_a_stop_cut_short_is_run_on_resume(tiny_data, tmp_path, monkeypatch):
    """A SIGTERM during the evaluation of step 6 saves step 6 without it; the resumed run must
    still log that evaluation (and keep step 6 as the best), as an uninterrupted run does."""
    from hellolondon.train import steps

    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=ref"), log=quiet)
    real = steps._eval_split

    def signal_during_the_evaluation_of_step_6(run, split):
        if run.state.step == 6 and not run.stop.pending:
            run.stop.pending = run.stop.requested = True  # what StopSignal's handler does
        return real(run, split)

    monkeypatch.setattr(steps, "_eval_split", signal_during_the_evaluation_of_step_6)
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=cut"), log=quiet)
    run = RunDir(tmp_path / "cut")
    assert [r["step"] for r in run.rows() if "eval/val_loss" in r] == [0]
    monkeypatch.setattr(steps, "_eval_split", real)
    resume(run.path)
    assert _without_timing(run.rows()) == _without_timing(RunDir(tmp_path / "ref").rows())
    best = checkpoint.read_state(run.checkpoints / "best", verify=False)
    assert best["step"] == checkpoint.read_state(tmp_path / "ref/checkpoints/best")["step"]


def test_a_sigterm_during_the_start_up_leaves_a_run_that_resumes(
    tiny_data, tmp_path, monkeypatch, capsys
):
    """A scheduler's SIGTERM while the run is being set up (W&B's start alone may take 15 s)
    used to kill the process with no word, leaving a run folder without a checkpoint that could
    neither be resumed nor started again under its name."""
    import os
    import signal

    from hellolondon.train import run as run_module

    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=ref"), log=quiet)
    real = run_module.announce_pace

    def sigterm_during_set_up(run, *args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(run, *args)

    monkeypatch.setattr(run_module, "announce_pace", sigterm_during_set_up)
    summary = train(tiny_config(tiny_data, tmp_path, "tracking.run_name=cut"), log=quiet)
    assert "SIGTERM: stopping after the start-up and saving a checkpoint" in capsys.readouterr().out
    assert summary["stop_reason"] == "stopped by a signal" and summary["iterations"] == 0
    run = RunDir(tmp_path / "cut")
    assert [p.name for p in checkpoint.step_dirs(run.checkpoints)] == ["step-000000"]
    monkeypatch.setattr(run_module, "announce_pace", real)
    resume(run.path)
    assert _without_timing(run.rows()) == _without_timing(RunDir(tmp_path / "ref").rows())


def test_a_rank_that_reads_each_step_stops_after_the_step_the_signal_came_in(
    tiny_data, tmp_path, monkeypatch, capsys
):
    """On the CPU (and with FSDP) every step reads its results, the ranks' stop flag among
    them: a signal to a rank must stop them all after that step, not at the next logged one."""
    import os
    import signal

    from hellolondon.train import loop

    monkeypatch.setattr(loop, "launched_in_group", lambda: True)  # a rank: its stop is agreed
    real = loop.train_step

    def signal_during_step_3(run, stop):
        if run.state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, stop)

    monkeypatch.setattr(loop, "train_step", signal_during_step_3)
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=r", "train.log_interval=5")
    summary = train(cfg, log=quiet)
    assert "SIGTERM: stopping after this step and saving a checkpoint" in capsys.readouterr().out
    assert summary["stopped_early"] and summary["iterations"] == 3
    assert checkpoint.read_state(tmp_path / "r/checkpoints/step-000003")["step"] == 3


@pytest.mark.parametrize("log_interval", [1, 5])
def test_a_signal_to_a_rank_during_an_evaluation_stops_every_rank_after_that_step(
    tiny_data, tmp_path, monkeypatch, log_interval
):
    """The loop had read the step results before it evaluated: a signal to one rank during
    the evaluation of step 6 must still stop all ranks after step 6, with its checkpoint, not
    train on to the next read and save a second one."""
    import os
    import signal

    from hellolondon.train import loop, steps

    monkeypatch.setattr(loop, "launched_in_group", lambda: True)  # a rank: its stop is agreed
    real = steps._eval_split

    def signal_during_the_evaluation_of_step_6(run, split):
        if run.state.step == 6 and not run.stop.pending:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, split)

    monkeypatch.setattr(steps, "_eval_split", signal_during_the_evaluation_of_step_6)
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=r", f"train.log_interval={log_interval}"
    )
    summary = train(cfg, log=quiet)
    assert summary["stopped_early"] and summary["iterations"] == 6
    assert [p.name for p in checkpoint.step_dirs(tmp_path / "r/checkpoints")] == ["step-000006"]


def test_ctrl_c_after_training_in_the_same_process_interrupts_again(tiny_data, tmp_path):
    """`demo` generates and reports after training, in the same process: Ctrl-C there must stop
    it, not be taken for a stop request of the training that has ended."""
    import os
    import signal

    # Python's own Ctrl-C handler, as in a terminal (a shell's background job starts without it)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=c", "train.max_iters=2")
        train(cfg, log=quiet)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_ctrl_c_leaves_the_run_recorded_as_aborted_not_killed(
    tiny_data, tmp_path, monkeypatch, capsys
):
    """A second Ctrl-C aborts training at once: the command says "interrupted" (exit 130), the
    logs keep every row, the trackers are told a non-zero exit code, and the run folder records
    the abort and its step, so `runs` does not take the run for killed once it is gone and says
    how it goes on from its last checkpoint."""
    import signal

    from tinyrun import TINY_MODEL, TINY_TRAIN

    from hellolondon.tracking.base import JsonlTracker
    from hellolondon.train import loop

    real_step, real_finish = loop.train_step, JsonlTracker.finish
    exit_codes = []

    def two_ctrl_c_in_step_8(run, stop):
        if run.state.step == 7 and not exit_codes:  # not again in the resume
            os.kill(os.getpid(), signal.SIGINT)  # the first: stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # the second: abort now
        return real_step(run, stop)

    def finish(self, exit_code: int = 0) -> None:
        exit_codes.append(exit_code)
        real_finish(self, exit_code)

    monkeypatch.setattr(loop, "train_step", two_ctrl_c_in_step_8)
    monkeypatch.setattr(JsonlTracker, "finish", finish)
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--run-name", "a"]
    assert main([*argv, *TINY_MODEL, *TINY_TRAIN]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
    assert exit_codes == [130]
    run = RunDir(tmp_path / "a")
    record = run.read_process_record()
    assert record["aborted"] == "by a second Ctrl-C at step 7" and record["aborted_at_step"] == 7
    assert record["pid"] == os.getpid()
    assert run.status() == ("aborted", "by a second Ctrl-C at step 7")
    assert max(r["step"] for r in run.rows()) == 7  # nothing logged so far is lost
    assert [p.name for p in checkpoint.step_dirs(run.checkpoints)] == ["step-000006"]
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["a", "tiny", "aborted"]
    assert (
        f"a: aborted by a second Ctrl-C at step 7; go on from its last checkpoint with: "
        f"hellolondon train --resume {run.path}" in out
    )
    resume(run.path)  # goes on from step 6, and the run ends cleanly: no record left
    assert run.status() == ("finished", "")


def test_a_second_ctrl_c_during_the_start_is_recorded_as_an_abort(tiny_data, tmp_path, monkeypatch):
    """W&B's start alone may take 15 s: a second Ctrl-C then leaves the new run folder saying
    it was aborted before its first step, not "killed"; a resume aborted so in the run's own
    folder leaves the record it found."""
    from hellolondon.train import run as run_module

    def ctrl_c_twice(*_, **__):
        raise KeyboardInterrupt  # what the second one raises

    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=s", "train.max_iters=6")
    real = run_module.open_tracker
    monkeypatch.setattr(run_module, "open_tracker", ctrl_c_twice)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=quiet)
    run = RunDir(tmp_path / "s")
    assert run.status() == ("aborted", "by a second Ctrl-C at step 0")
    assert not run.killed_while_starting()
    monkeypatch.setattr(run_module, "open_tracker", real)
    shutil.rmtree(run.path)
    train(cfg, log=quiet)  # ends cleanly: no record
    monkeypatch.setattr(run_module, "open_tracker", ctrl_c_twice)
    with pytest.raises(KeyboardInterrupt):
        resume(run.path)
    assert run.status() == ("finished", "") and not run.process_file.exists()


@pytest.mark.parametrize(
    "command, then",
    [
        ("hellolondon train --gpus 2 --preset tiny", "hellolondon train --gpus 2 --resume"),
        ("hellolondon train --gpus=4 --preset slm", "hellolondon train --gpus 4 --resume"),
        ("torchrun --nproc_per_node=2 -m hellolondon train", "hellolondon train --resume"),
        ("hellolondon train --preset tiny", "hellolondon train --resume"),
        ("hellolondon train --gpus 'unbalanced", "hellolondon train --resume"),
    ],
)
def test_the_command_that_goes_on_starts_as_many_processes_as_train_gpus_did(
    tmp_path, command, then
):
    from hellolondon.tracking.wandb_tracker import resume_command

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_config({"reproduce": {"command": command}})
    assert resume_command(run) == f"{then} {run.path}"


# Both Ctrl-Cs come while the main thread is inside one C call (here a key derivation sized to
# last about 1.5 s, as a slow CPU step or a compilation would), so Python runs the handler once.
TWO_CTRL_CS_IN_ONE_CALL = """
import hashlib, sys, time
from hellolondon.train.signals import StopSignal

stop = StopSignal(verbose=False)
t = time.perf_counter()
hashlib.pbkdf2_hmac("sha256", b"x", b"y", 20_000)
rounds = int(20_000 * 1.5 / max(time.perf_counter() - t, 1e-6))
print("ready", flush=True)
try:
    hashlib.pbkdf2_hmac("sha256", b"x", b"y", rounds)
    print("stop" if stop.requested else "nothing", flush=True)
except KeyboardInterrupt:
    print("aborted", flush=True)
stop.restore()
"""


def test_two_ctrl_cs_during_one_long_call_abort():
    """The interpreter merges the two into one run of the handler; counting the deliveries
    still tells a double Ctrl-C from a single one, which stops after the step."""
    for presses, said in ((2, "aborted"), (1, "stop")):
        child = subprocess.Popen(
            [sys.executable, "-c", TWO_CTRL_CS_IN_ONE_CALL], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.3)
        for _ in range(presses):
            child.send_signal(signal.SIGINT)
            time.sleep(0.1)
        out = child.communicate(timeout=60)[0]
        assert out == f"{said}\n" and child.returncode == 0
