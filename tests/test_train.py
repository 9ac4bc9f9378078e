"""The trainer end to end on a tiny model: falling loss, run folder, checkpoints, exact resume."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from tinyrun import TINY_MODEL, TINY_TRAIN, tiny_config

from hellolondon.config import TrainConfig
from hellolondon.rundir import RunDir, read_jsonl
from hellolondon.train import checkpoint, speed
from hellolondon.train.loop import train


def _losses(run_dir: Path) -> dict[int, float]:
    return {
        r["step"]: r["train/loss"]
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if "train/loss" in r
    }


def test_a_short_run_learns_and_leaves_a_complete_run_folder(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=r", "train.max_iters=30", "lr=3e-3")
    summary = train(cfg, log=lambda *_: None)
    run = tmp_path / "r"
    assert summary["best_val_loss"] < summary["first_val_loss"] - 0.5
    assert {"config.json", "metrics.jsonl", "checkpoints", "tokenizer", "samples.txt"} <= {
        p.name for p in run.iterdir()
    }
    rows = read_jsonl(run / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["train/iter"] for r in train_rows] == list(range(1, 31))
    assert all(r["step"] == r["train/iter"] for r in train_rows)
    evals = [r for r in rows if "eval/val_loss" in r]
    assert [r["eval/iter"] for r in evals] == [0, 6, 12, 18, 24, 30]
    assert not any(r.get("train/loss") == 0 for r in rows)  # no placeholder rows
    # time per epoch: one pass over train.bin's windows at the row's samples per second
    windows = (os.path.getsize(tiny_data / "train.bin") // 2 - 1 - 32) // 32  # block_size 32
    last = train_rows[-1]
    assert last["train/epoch_time_s"] == pytest.approx(windows / last["train/samples_per_sec"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["n_embd"] == 32 and saved["model_info"]["parameters"] > 0
    assert saved["model_info"]["architecture"] == "GPT-2 (2 layers, 2 heads, 32 wide)"
    # the guide's "Epochs": passes over train.bin in 30 steps of 4 sequences
    assert saved["data_info"]["epochs"] == pytest.approx(30 * 4 / windows)
    assert saved["data_info"]["data_sources"] == 1  # the guide's data_sources: the Folio
    # the `auto` settings as decided on this machine
    hw = saved["hardware"]
    assert (hw["dtype"], hw["compiled"], hw["micro_batches"]) == ("float32", False, [4, 1])
    assert (run / "checkpoints" / "best" / "state.json").is_file()
    assert len(checkpoint.step_dirs(run / "checkpoints")) == 2  # keep_last
    assert "=== iteration 30" in (run / "samples.txt").read_text()


def test_the_presets_are_named_as_the_gpt2_sizes_they_have():
    from hellolondon.config import PRESETS
    from hellolondon.train.run import architecture

    def name(preset: str) -> str:
        m = PRESETS[preset].model
        return architecture(m.n_layer, m.n_head, m.n_embd)

    assert name("regular") == "GPT-2 Medium (24 layers, 16 heads, 1024 wide)"
    assert name("slm") == "GPT-2 Small (12 layers, 12 heads, 768 wide)"
    assert architecture(1, 1, 32) == "GPT-2 (1 layer, 1 head, 32 wide)"


def test_resume_falls_back_past_a_corrupt_checkpoint(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=c", "train.keep_last=3")
    train(cfg, log=lambda *_: None)
    root = tmp_path / "c" / "checkpoints"
    newest = checkpoint.step_dirs(root)[0]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    notes: list[str] = []
    ckpt, state = checkpoint.find_resumable(tmp_path / "c", log=notes.append)
    assert ckpt == checkpoint.step_dirs(root)[1] and state["step"] == 6
    assert "model.safetensors" in notes[0] and "truncated or corrupt" in notes[0]


def test_extending_a_finished_run(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=e")
    train(cfg, log=lambda *_: None)
    from hellolondon.train.run import config_for_resume

    more = config_for_resume(str(tmp_path / "e"), None, ["train.max_iters=18"])
    summary = train(more, resume=str(tmp_path / "e"), log=lambda *_: None)
    assert summary["iterations"] == 18
    assert sorted(_losses(tmp_path / "e")) == list(range(1, 19))


def test_a_finished_run_resumed_as_it_is_evaluates_and_logs_nothing_again(tiny_data, tmp_path):
    # max_iters is not a multiple of eval_interval: the last evaluation is the one `finish` runs
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=f", "train.eval_interval=5")
    train(cfg, log=lambda *_: None)
    metrics = tmp_path / "f" / "metrics.jsonl"
    rows = read_jsonl(metrics)
    evals = [r["eval/iter"] for r in rows if "eval/iter" in r]
    assert evals == [0, 5, 10, 12]
    from hellolondon.train.run import config_for_resume

    for _ in range(2):
        again = config_for_resume(str(tmp_path / "f"), None, [])
        summary = train(again, resume=str(tmp_path / "f"), log=lambda *_: None)
        assert read_jsonl(metrics) == rows  # no evaluation at the last step again
        assert summary["iterations"] == cfg.train.max_iters


def test_a_nan_loss_is_reported_and_training_goes_on(tiny_data, tmp_path, monkeypatch):
    """The weights the skipped step leaves: `test_injected_nan_follows_the_configured_policy`."""
    import torch

    from hellolondon.model import GPT

    real = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, cache=None):
        logits, loss = real(self, idx, targets, cache)
        if self.training and targets is not None:
            calls["n"] += 1
            if calls["n"] == 3:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    cfg = tiny_config(
        tiny_data, tmp_path, "tracking.run_name=n", "train.max_iters=4", "eval_interval=0"
    )
    summary = train(cfg, log=lambda *_: None)
    assert summary["iterations"] == 4
    events = read_jsonl(tmp_path / "n" / "events.jsonl")
    assert any("non-finite" in e["title"].lower() or "nan" in e["text"].lower() for e in events)
    rows = [r for r in read_jsonl(tmp_path / "n" / "metrics.jsonl") if "train/loss" in r]
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in rows if r["step"] != 3)


def test_a_slow_tiny_run_is_not_told_to_try_the_tiny_preset(tiny_data, tmp_path, monkeypatch):
    from hellolondon import hardware

    monkeypatch.setattr(hardware, "cpu_matmul_flops", lambda *shape: 1e3)  # a very slow CPU
    lines: list[str] = []
    train(tiny_config(tiny_data, tmp_path, "max_iters=1", "warmup_iters=0"), log=lines.append)
    pace = next(line for line in lines if line.startswith("estimated "))
    assert "smaller model or batch" in pace and "--preset tiny" not in pace
    assert "hellolondon demo" not in pace  # the demo itself may run slowly on a busy machine


def test_the_eta_leaves_the_first_steps_compilation_out(monkeypatch):
    from types import SimpleNamespace

    import hellolondon.train.steps as steps
    from hellolondon.train.state import TrainState

    now = {"t": 0.0}
    monkeypatch.setattr(steps.time, "perf_counter", lambda: now["t"])
    lines: list[str] = []
    cfg = SimpleNamespace(train=TrainConfig(compile="auto"))
    run = SimpleNamespace(state=TrainState(), tokens_per_step=1000, log=lines.append, cfg=cfg,
                          dist=SimpleNamespace(device=torch.device("cuda")))  # fmt: skip
    clock = steps.Clock(run)
    now["t"] += 30.0  # the first step compiles
    clock.tick()
    clock.first_step()
    for _ in range(4):  # then four steps of 50 ms
        now["t"] += 0.05
        clock.tick()
    assert clock.lap_ms() == pytest.approx(30200 / 5)  # dt_ms: the lap as it was
    assert clock.steady_ms == pytest.approx(50.0)  # the rate the ETA uses
    for _ in range(5):
        now["t"] += 0.06
        clock.tick()
    assert clock.lap_ms() == clock.steady_ms == pytest.approx(60.0)
    assert lines == ["first step took 30.0 s (compilation included)"]
    run.dist.device = torch.device("cpu")  # `auto` compiles on CUDA only
    steps.Clock(run).first_step()
    assert lines[-1] == "first step took 0 ms"
    clock = steps.Clock(run)
    now["t"] += 0.0423  # a fast step (a resumed run's, with its kernels cached) in ms
    clock.first_step()
    assert lines[-1] == "first step took 42 ms"


@pytest.mark.parametrize("preset", ["tiny", "slm"])
def test_a_slow_cpu_pace_never_suggests_the_preset_already_in_use(preset, monkeypatch):
    from types import SimpleNamespace

    import torch

    from hellolondon.config import build_config
    from hellolondon.train import run as run_module
    from hellolondon.train.distributed import Dist
    from hellolondon.train.state import TrainState

    monkeypatch.setattr(run_module.hardware, "cpu_matmul_flops", lambda *shape: 1e9)
    lines: list[str] = []
    run = SimpleNamespace(
        cfg=build_config(preset),
        dist=Dist(device=torch.device("cpu")),
        flops_per_token=1e9,
        tokens_per_step=10_000,
        state=TrainState(),
        log=lines.append,
    )
    assert run_module.announce_pace(run, 10, "steps to go") is True
    assert lines[0].startswith("estimated 14,000 s per step on this CPU")  # 1.4 × 1e13 / 1e9
    assert ("--preset tiny" in lines[0]) is (preset != "tiny")
    assert "for the 10 steps to go" in lines[0]
    run_module.announce_pace(run, 0, "steps to go")  # a resume with nothing left to train
    assert "for the" not in lines[1] and lines[1].startswith("estimated 14,000 s per step")


def test_the_cpu_pace_of_several_processes_is_that_of_one_share_said_by_rank_0(monkeypatch):
    """Each of N CPU processes does 1/N of the step's tokens on its own threads: the estimate
    is that share's time, and only rank 0 says it and draws progress bars (the other ranks'
    bars would cross its lines on the same terminal)."""
    from types import SimpleNamespace

    import torch

    from hellolondon.config import build_config
    from hellolondon.train import run as run_module
    from hellolondon.train.distributed import Dist
    from hellolondon.train.state import TrainState

    monkeypatch.setattr(run_module.hardware, "cpu_matmul_flops", lambda *shape: 1e9)
    lines: list[str] = []

    def rank(r: int) -> SimpleNamespace:
        dist = Dist(rank=r, world_size=2, device=torch.device("cpu"), group=True)
        return SimpleNamespace(
            cfg=build_config("tiny"), dist=dist, flops_per_token=1e9, tokens_per_step=10_000,
            state=TrainState(), log=lines.append,
        )  # fmt: skip

    assert run_module.announce_pace(rank(0), 10, "steps to go") is True
    assert lines[0].startswith("estimated 7,000 s per step on this CPU")  # 1.4 × 5e12 / 1e9
    assert run_module.announce_pace(rank(1), 10, "steps to go") is False
    assert len(lines) == 1


def test_the_cpu_pace_weighs_the_blocks_and_the_output_head_by_their_own_speed(monkeypatch):
    from hellolondon.config import ModelConfig
    from hellolondon.train import run as run_module

    shapes = []

    def speed(rows, inner, cols):  # the blocks' shape runs 4 times slower than the head's
        shapes.append((rows, inner, cols))
        return 1e9 if cols == 4 * inner else 4e9

    monkeypatch.setattr(run_module.hardware, "cpu_matmul_flops", speed)
    m = ModelConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=1000, block_size=64)
    head = 6 * 1000 * 32
    seconds = run_module._cpu_step_seconds(m, head + 1e6, 4096)
    assert seconds == pytest.approx(1.4 * 4096 * (1e6 / 1e9 + head / 4e9))
    assert shapes == [(2048, 32, 128), (2048, 32, 1000)]


@pytest.mark.parametrize("monitor", ["true", "false"])
def test_out_of_memory_is_an_error_finding_and_ends_the_tracked_run_as_failed(
    tiny_data, tmp_path, monkeypatch, monitor
):
    import torch

    import hellolondon.train.loop as loop
    import hellolondon.train.run as run_module

    real_step, real_open = loop.train_step, run_module.open_tracker
    exit_codes: list[int] = []

    def step(run, stop):
        if run.state.step == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(run, stop)

    def open_tracker(*args, **kwargs):
        tracker = real_open(*args, **kwargs)
        finish = tracker.finish
        tracker.finish = lambda exit_code=0: (exit_codes.append(exit_code), finish(exit_code))
        return tracker

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(run_module, "open_tracker", open_tracker)
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=oom", f"monitor.enabled={monitor}")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(cfg, log=lambda *_: None)
    events = [e for e in read_jsonl(tmp_path / "oom" / "events.jsonl") if e["rule"] == "failure"]
    assert [(e["level"], e["title"], e["step"]) for e in events] == [("ERROR", "out of memory", 3)]
    assert "train.batch_size" in events[0]["text"]
    assert exit_codes == [1]  # W&B's run ends failed, not with the clean exit its hook records
    process = RunDir(tmp_path / "oom").training_process()
    assert process == ("failed", "OutOfMemoryError at step 3")  # what `compare` and `watch` say


def test_a_failure_after_the_logs_closed_is_recorded_and_raised_as_itself(
    tiny_data, tmp_path, monkeypatch
):
    """The end of a run (the ranks' last barrier, say) can fail after the logs were closed:
    the failure still reaches events.jsonl, and the error raised is that one."""
    import hellolondon.train.steps as steps

    def barrier(dist):
        raise RuntimeError("the last barrier failed")

    monkeypatch.setattr(steps, "shutdown", barrier)
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=late", "train.max_iters=2")
    with pytest.raises(RuntimeError, match="the last barrier failed"):
        train(cfg, log=lambda *_: None)
    events = [e for e in read_jsonl(tmp_path / "late" / "events.jsonl") if e["rule"] == "failure"]
    assert [(e["level"], e["step"]) for e in events] == [("ERROR", 2)]
    assert "the last barrier failed" in events[0]["text"]


def test_a_failure_that_cannot_be_recorded_still_raises_the_first_error(
    tiny_data, tmp_path, monkeypatch, capsys
):
    import torch

    import hellolondon.train.loop as loop
    from hellolondon.rundir import RunDir as Folder

    def step(run, stop):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def full_disk(self, error):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(Folder, "mark_failed", full_disk)
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=full", "train.max_iters=2")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(cfg, log=lambda *_: None)
    assert "the failure could not be recorded" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HELLOLONDON_PEAK_TFLOPS": "abc"}, "HELLOLONDON_PEAK_TFLOPS='abc' is not a positive"),
        ({"HELLOLONDON_PEAK_TFLOPS": "-5"}, "HELLOLONDON_PEAK_TFLOPS='-5' is not a positive"),
        ({"RANK": "x"}, "RANK='x' is not a whole number"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
    ],
)
def test_a_bad_environment_value_is_one_line_before_the_run_folder(
    tiny_data, tmp_path, monkeypatch, capsys, env, message
):
    from hellolondon.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["train", "--preset", "tiny", "--data", str(tiny_data), "--out-dir", str(tmp_path)]
    assert main([*argv, *TINY_MODEL, *TINY_TRAIN, "tracking.run_name=e"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "e").exists()  # not a run folder that failed after training


def test_the_parameter_count_of_a_config_is_the_built_models():
    from hellolondon.config import ModelConfig
    from hellolondon.model import GPT

    for m in (ModelConfig(), ModelConfig(n_layer=3, n_head=2, n_embd=48, vocab_size=777)):
        assert m.parameters == GPT(m).num_params(non_embedding=False)


def test_a_model_too_large_for_this_machine_is_refused_before_its_run_folder(
    tiny_data, tmp_path, capsys
):
    from hellolondon.cli import main

    args = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path / "runs")]
    assert main([*args, "model.n_layer=10000000"]) == 2  # 7.9 trillion parameters: 29 TiB
    err = capsys.readouterr().err
    assert re.search(r"the model has 7,869,[0-9,]+ parameters, 29,3[0-9]{2} GiB", err)
    assert "lower model.n_layer" in err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.fp8=true", "train.fp8=true needs a CUDA GPU"),  # beside the presets' Muon
        ("train.micro_batch=5", "train.micro_batch=5 must divide"),
        ("train.attention=cudnn", "the cudnn attention kernel cannot run on cpu"),
    ],
)
def test_a_speed_option_this_run_cannot_use_is_refused_before_its_run_folder(
    tiny_data, tmp_path, capsys, setting, message
):
    from hellolondon.cli import main

    runs = tmp_path / "runs"
    args = ["train", "--data", str(tiny_data), "--out-dir", str(runs), "train.device=cpu"]
    assert main([*args, "train.max_iters=40", "train.batch_size=4", setting]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert out == "" and not runs.exists()  # the refusal is the only line


def test_a_compile_mode_without_compiling_is_said(tiny_data, tmp_path, capsys):
    from hellolondon.cli import main

    args = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--wandb-mode",
            "disabled", "train.device=cpu", "train.max_iters=1", "train.batch_size=2"]  # fmt: skip
    assert main([*args, "train.compile=false", "train.compile_mode=max-autotune"]) == 0
    assert "train.compile_mode=max-autotune has no effect" in capsys.readouterr().out


def test_a_vocabulary_setting_the_token_files_overrule_is_said(tiny_data, tmp_path):
    said: list[str] = []
    cfg = tiny_config(tiny_data, tmp_path, "model.vocab_size=10", "train.max_iters=1")
    summary = train(cfg, log=said.append)
    assert summary["iterations"] == 1
    assert (
        "note: model.vocab_size=10 is not used: the model takes the token files' "
        "vocabulary, 512 (their meta.json)" in said
    )
    quiet: list[str] = []  # the preset's own value, or the files' own: nothing to say
    train(tiny_config(tiny_data, tmp_path, "tracking.run_name=b", "train.max_iters=1"),
          log=quiet.append)  # fmt: skip
    assert not any("vocab_size" in line for line in quiet)


def test_a_step_larger_than_the_training_data_is_said(tiny_data, tmp_path):
    from hellolondon.train.data import Batches

    windows = Batches(tiny_data, 32, 0, torch.device("cpu")).n_windows
    said: list[str] = []
    cfg = tiny_config(tiny_data, tmp_path, "tracking.run_name=big", "train.max_iters=1",
                      f"train.batch_size={windows + 1}", "eval_interval=0")  # fmt: skip
    train(cfg, log=said.append)
    assert any(s.startswith(f"warning: one step takes {windows + 1:,} sequences") for s in said)


def test_a_step_too_large_for_the_memory_is_refused_before_its_run_folder(
    tiny_data, tmp_path, capsys, monkeypatch
):
    from hellolondon.cli import main
    from hellolondon.train import run as run_module

    monkeypatch.setattr("hellolondon.hardware.available_memory_bytes", lambda _: 2**30)
    args = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path / "runs"),
            "train.device=cpu", "train.dtype=float32", *TINY_MODEL]  # fmt: skip
    assert main([*args, "train.batch_size=20000"]) == 2  # 20,000 x 32 x 512 logits: 1.2 GiB
    out, err = capsys.readouterr()
    assert err.startswith("error: a training step of 20,000 x 32 tokens in float32 needs at ")
    assert "more than the 1.0 GiB of memory available on cpu" in err and err.count("\n") == 1
    assert out == "" and not (tmp_path / "runs").exists()
    # at the floor itself the step is not refused: the floor is a lower bound
    cfg = tiny_config(tiny_data, tmp_path / "runs", "train.batch_size=20000")
    cpu = torch.device("cpu")
    floor = sum(speed.training_memory_floor(cfg, torch.float32, "cpu").values())
    monkeypatch.setattr("hellolondon.hardware.available_memory_bytes", lambda _: floor)
    run_module.check_fits_in_memory(cfg, cpu, torch.float32)
