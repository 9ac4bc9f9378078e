"""The README's main job (the demo) end to end, shortened, and the bench command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hellolondon.cli import main


def test_bench_prints_the_step_time_as_json(capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1",
            "--batch-size", "2", "--block-size", "16", "--vocab-size", "256", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ms_per_iter"] > 0 and result["tokens_per_sec"] > 0
    assert result["dtype"] == "float32" and result["mfu_percent"] is None  # no CPU peak


def test_bench_json_keeps_its_notes_on_stderr(capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--batch-size", "2", "--block-size", "16", "--vocab-size", "256", "--json",
            "train.compile=false", "train.compile_mode=reduce-overhead"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["compile_mode"] == "reduce-overhead"  # stdout: the JSON alone
    assert "note: train.compile_mode=reduce-overhead has no effect" in err


def test_bench_takes_key_value_settings_after_the_flags(capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--block-size", "8", "--json", "model.block_size=16", "train.batch_size=3",
            "model.vocab_size=256", "model.n_layer=1", "train.compile=false"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["block_size"] == 16 and result["batch_size"] == 3  # the setting beats the flag
    assert result["compile"] == "false"


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.lrr=3", "did you mean train.lr"),
        ("model.block_size", "must look like key=value"),
        ("train.dtype=bfloat17", "train.dtype"),
    ],
)
def test_bench_settings_are_checked_as_train_checks_them(setting, message, capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0"]
    assert main([*argv, setting]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bench_says_when_the_dtype_asked_for_does_not_run_here(capsys):
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--batch-size", "2", "--block-size", "16", "--vocab-size", "256", "--dtype", "float16",
            "model.n_layer=1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train.dtype=float16 does not run on the CPU: float32 instead" in out
    assert "(float32, compile" in out


@pytest.mark.parametrize("lacks", [True, False])
def test_bench_warns_of_bfloat16_on_a_cpu_without_bf16_matrix_units(lacks, capsys, monkeypatch):
    monkeypatch.setattr("hellolondon.hardware.cpu_lacks_bf16_matmul", lambda: lacks)
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
            "--batch-size", "2", "--block-size", "16", "--vocab-size", "256",
            "--dtype", "bfloat16", "model.n_layer=1", "train.compile=false"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(bfloat16, compile" in out  # it still runs as asked
    assert ("warning: this CPU has no bfloat16 matrix units" in out) == lacks


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "train.batch_size must be positive"),
        (["--block-size", "0"], "model.block_size must be positive"),
        (["--profile", "{file}"], "is a file; give a folder"),
    ],
)
def test_bench_refuses_a_bad_flag_before_it_runs(flags, message, tmp_path, capsys):
    (tmp_path / "file").write_text("kept")
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0"]
    flags = [f.format(file=tmp_path / "file") for f in flags]
    assert main([*argv, *flags]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.count("\n") == 1 and out == ""
    assert (tmp_path / "file").read_text() == "kept"


@pytest.mark.parametrize("value", ["abc", "-5", "0"])
def test_bench_refuses_a_bad_peak_before_it_builds_the_model(value, capsys, monkeypatch):
    monkeypatch.setenv("HELLOLONDON_PEAK_TFLOPS", value)
    built = []
    monkeypatch.setattr("hellolondon.bench.build_model", lambda *a: built.append(a))
    assert main(["bench", "--preset", "tiny", "--device", "cpu", "--compile", "false"]) == 2
    out, err = capsys.readouterr()
    assert f"HELLOLONDON_PEAK_TFLOPS='{value}' is not a positive number" in err
    assert err.count("\n") == 1 and out == "" and not built


def test_demo_refuses_a_work_folder_of_other_files_before_writing(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "documents.jsonl").write_text("my corpus\n")
    (tmp_path / "afile").write_text("kept")
    cases = [
        (["--work", str(mine)], "holds files the demo did not write (data, documents.jsonl)"),
        (["--work", str(tmp_path / "afile")], "is a file, not a folder"),
        (["--work", str(tmp_path / "new"), "--out-dir", str(tmp_path / "afile")], "is a file"),
    ]
    for flags, message in cases:
        assert main(["demo", "--wandb-mode", "disabled", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert (mine / "documents.jsonl").read_text() == "my corpus\n"
    assert sorted(p.name for p in mine.iterdir()) == ["data", "documents.jsonl"]
    assert (tmp_path / "afile").read_text() == "kept" and not (tmp_path / "new").exists()
    monkeypatch.chdir(tmp_path)  # the default work/demo: the demo's own names only
    (tmp_path / "work" / "demo").mkdir(parents=True)
    (tmp_path / "work" / "demo" / "notes.txt").write_text("mine")
    assert main(["demo", "--wandb-mode", "disabled"]) == 2
    assert "holds files the demo did not write (notes.txt)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["train.bogus=1"], "unknown config key"),
        (["model.n_head=5"], "model.n_embd"),
        (["train.device=gpu"], "unknown device"),
        (["data.data_dir=elsewhere"], "data.data_dir is the demo's own token folder"),
        (["--vocab-size", "100"], "give a size from 259 to 65536"),
        (["--vocab-size", "70000"], "give a size from 259 to 65536"),
    ],
)
def test_demo_refuses_a_bad_setting_before_any_stage(flags, message, tmp_path, capsys):
    work = tmp_path / "work"
    argv = ["demo", "--wandb-mode", "disabled", "--work", str(work)]
    argv += ["--out-dir", str(tmp_path / "runs"), *flags]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and err.count("\n") == 1, err
    assert "== 1/5" not in out and not work.exists() and not (tmp_path / "runs").exists()


def test_demo_refuses_a_run_name_in_use_before_it_replaces_the_token_files(tmp_path, capsys):
    work, runs = tmp_path / "work", tmp_path / "runs"
    taken = runs / "same" / "checkpoints" / "step-000010"  # a run the token files belong to
    taken.mkdir(parents=True)
    (taken / "state.json").write_text("{}")
    argv = ["demo", "--wandb-mode", "disabled", "--work", str(work), "--out-dir", str(runs)]
    assert main([*argv, "--run-name", "same"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == (
        f"error: run folder {runs / 'same'} already exists; choose another --run-name or "
        f"resume it with `hellolondon train --resume {runs / 'same'}`"
    )
    assert "== 1/5" not in out and not work.exists()


@pytest.mark.slow
def test_demo_runs_every_stage_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline: never the user's account
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    # a narrower model than the demo's, with shorter evaluations: each stage, not its speed
    argv = ["demo", "--vocab-size", "1024", "--wandb-mode", "offline",
            "model.n_layer=2", "model.n_embd=64", "train.batch_size=8", "train.eval_iters=2",
            "train.max_iters=20", "train.warmup_iters=4", "train.eval_interval=10",
            "train.ckpt_interval=10"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for stage in ("1/5 corpus", "2/5 tokenizer", "3/5 prepare", "4/5 train", "5/5 generate"):
        assert stage in out
    assert "Model parameters:" in out and "num decayed parameter tensors:" in out
    assert "wandb sync" in out  # offline without a key, with the command to upload later
    run = next((tmp_path / "runs").iterdir())
    assert run.name.startswith("london-tiny-demo-")
    assert (run / "report" / "report.html").is_file() and (run / "report" / "report.png").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_loss"] < summary["first_val_loss"]
    assert out.rstrip().splitlines()[-1].strip().startswith("hellolondon train --preset slm")


QUALITY_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_bench.py"


def _quality_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality_bench", QUALITY_BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_quality_bench_never_records_a_run_cut_short(tmp_path, monkeypatch):
    """A run stopped early (Ctrl-C) writes no result, and the folder an interrupted call left
    is started again, not refused as an existing run."""
    from argparse import Namespace

    bench = _quality_bench()
    args = Namespace(steps=10, eval_every=5, eval_iters=2)
    left = tmp_path / "runs" / "steps10-eval5x2" / "muon-wsd-lr0.01-s1"
    (left / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr("hellolondon.train.loop.train", lambda cfg, log: {"iterations": 3})
    with pytest.raises(SystemExit, match="stopped at step 3 of 10; not recorded"):
        bench.run_one(tmp_path, "muon-wsd", 0.01, 1, args)
    assert not left.exists() and not (tmp_path / "results").exists()
    assert bench.setup_name(args) != bench.setup_name(Namespace(**{**vars(args), "steps": 20}))


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--recipes", "muon-wsd,adamw"], "--recipes: 'adamw' is not one of adamw-cosine"),
        (["--grid-muon-wsd", "0.01,abc"], "give learning rates separated by commas"),
        (["--seeds", "0"], "--seeds must be 1 or more, not 0"),
    ],
)
def test_the_quality_bench_says_a_bad_flag_in_one_line(tmp_path, flags, said):
    done = subprocess.run(
        [sys.executable, str(QUALITY_BENCH), "--work", str(tmp_path / "w"), *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("steps, warmup", [(200, 20), (500, 20), (20, 2)])
def test_the_quality_bench_runs_fit_their_schedule_at_any_length(tmp_path, steps, warmup):
    from argparse import Namespace

    from hellolondon.config import build_config

    bench = _quality_bench()
    args = Namespace(steps=steps, eval_every=5, eval_iters=2)
    for recipe in bench.RECIPES:  # 200 steps: the documented measurement's 20-step warm-up
        cfg = build_config("tiny", overrides=bench.settings(tmp_path, recipe, 0.01, 1, args))
        assert (cfg.train.max_iters, cfg.train.warmup_iters) == (steps, warmup)


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--block-size", "1000000"], "a training step of 16 x 1,000,000 tokens in float32 needs"),
        (["--batch-size", "100000"], "a training step of 100,000 x 256 tokens in float32 needs"),
    ],
)
def test_bench_refuses_a_step_that_cannot_fit_in_memory(flags, said, capsys, monkeypatch):
    # one enormous first operation would hold off SIGTERM for minutes or exhaust the memory
    monkeypatch.setattr("hellolondon.hardware.available_memory_bytes", lambda _: 8 * 2**30)
    built = []
    monkeypatch.setattr("hellolondon.bench.build_model", lambda *a: built.append(a))
    assert main(["bench", "--preset", "tiny", "--device", "cpu", "--compile", "false", *flags]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {said} at least ") and err.count("\n") == 1
    assert "more than the 8.0 GiB of memory available on cpu; lower train.batch_size" in err
    assert out == "" and not built  # said before the model is built
