"""Bad input: one clear line, a non-zero exit, no traceback, nothing overwritten."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tinyrun import TINY_MODEL, TINY_TRAIN, tiny_config

import hellolondon
from hellolondon.cli import main
from hellolondon.train.loop import train


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-runs")
    train(
        tiny_config(tiny_data, out, "tracking.run_name=base", "train.max_iters=6"),
        log=lambda *_: None,
    )
    return out / "base"


def _err(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_every_command_has_help(capsys):
    for cmd in (
        ["train"],
        ["generate"],
        ["bench"],
        ["demo"],
        ["config"],
        ["tokenizer", "train"],
        ["prepare"],
    ):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0
        assert "example" in capsys.readouterr().out.lower()


def test_missing_data_folder(capsys, tmp_path):
    err = _err(capsys, ["train", "--data", str(tmp_path / "nope"), "--out-dir", str(tmp_path)])
    assert "nope does not exist" in err and "prepare" in err
    (tmp_path / "empty").mkdir()
    err = _err(capsys, ["train", "--data", str(tmp_path / "empty"), "--out-dir", str(tmp_path)])
    assert "empty has no meta.json" in err and "prepare" in err
    # a tokenizer's folder: `prepare --out` there would be refused, so it is not the advice
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    err = _err(capsys, ["train", "--data", str(tmp_path / "tok"), "--out-dir", str(tmp_path)])
    assert "tok holds no token files (tokenizer.json)" in err and "--out" not in err
    assert "--data" in err


def test_unknown_config_key(capsys, tiny_data, tmp_path):
    err = _err(capsys, ["train", "--data", str(tiny_data), "lrr=3"])
    assert "did you mean lr" in err


def test_settings_after_a_flag_are_settings(capsys, trained):
    # the form `reproduce --help` shows: settings after a flag that follows RUN
    assert main(["reproduce", str(trained), "--check", "train.max_iters=5"]) == 0
    err = _err(capsys, ["reproduce", str(trained), "--check", "train.max_iters=abc"])
    assert "max_iters" in err and "abc" in err
    assert main(["config", "train.lr=0.004", "--preset", "tiny", "train.min_lr=0.0003"]) == 0
    out = capsys.readouterr().out
    assert "\nlr = 0.004\n" in out and "\nmin_lr = 0.0003\n" in out
    with pytest.raises(SystemExit) as exc:  # an unknown flag still is one
        main(["config", "--preset", "tiny", "--nope", "train.lr=0.004"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "argv, said",
    [
        (["train", "--max-iters", "2", "--wandb-mode", "disabled", "train.lr=1e-3"],
         "unrecognized arguments: --max-iters; settings are given as key=value: train.max_iters=2"),
        (["train", "--block_size=64"], "--block_size=64; settings are given as key=value: model.block_size=64"),
        (["train", "--run_name", "x"], "--run_name; did you mean --run-name?"),
        (["generate", "r", "--max_new_tokens", "5"], "--max_new_tokens 5; did you mean --max-new-tokens?"),
        (["corpus", "collect", "--gutenberg_mirror", "x"], "did you mean --gutenberg-mirror?"),
        (["train", "--nope"], "unrecognized arguments: --nope"),
    ],
)  # fmt: skip
def test_an_unknown_flag_is_named_with_what_it_likely_meant(capsys, argv, said):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(
        f"hellolondon {' '.join(argv[:2] if argv[0] == 'corpus' else argv[:1])}: error: "
    )
    assert last.endswith(f"{said} (see --help)")


def test_settings_are_applied_after_the_flags(tiny_data, tmp_path):
    """`--help` says the key=value settings are applied last: they win over a flag for the same
    field, in train and reproduce alike (bench's flags work the same way)."""
    from hellolondon.cli import parse_command_line
    from hellolondon.cli.train_command import config_from_args

    argv = ["train", "--data", str(tiny_data), "--out-dir", "a", "--run-name", "x",
            "--wandb-mode", "offline", "out_dir=b", "tracking.run_name=y",
            "tracking.wandb_mode=disabled", "data.data_dir=elsewhere"]  # fmt: skip
    cfg = config_from_args(parse_command_line(argv))
    assert (cfg.out_dir, cfg.tracking.run_name, cfg.tracking.wandb_mode) == ("b", "y", "disabled")
    assert cfg.data.data_dir == "elsewhere"
    cfg = config_from_args(parse_command_line(argv[:9]))  # the flags alone
    assert (cfg.out_dir, cfg.tracking.run_name, cfg.tracking.wandb_mode) == ("a", "x", "offline")


def test_unwritable_run_folder(capsys, tiny_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = _err(
        capsys,
        ["train", "--data", str(tiny_data), "--out-dir", str(blocker), *TINY_MODEL, *TINY_TRAIN],
    )
    assert "cannot write the run folder" in err and "is a file, not a folder" in err


def test_an_unwritable_out_dir_is_said_before_the_model_is_built(
    capsys, tiny_data, tmp_path, monkeypatch
):
    import hellolondon.rundir as rundir

    monkeypatch.setattr(rundir.os, "access", lambda *_: False)  # unwritable, even for root
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path / "runs")]
    assert main([*argv, *TINY_MODEL, *TINY_TRAIN]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: cannot write the run folder") and err.count("\n") == 1
    assert f"({tmp_path} is not writable); choose a writable out_dir" in err
    assert "parameters" not in out and not (tmp_path / "runs").exists()
    read_only = type("Stat", (), {"f_flag": os.ST_RDONLY})()
    monkeypatch.setattr(rundir.os, "statvfs", lambda *_: read_only)  # a read-only mount
    assert main([*argv, *TINY_MODEL, *TINY_TRAIN]) == 2
    assert f"({tmp_path} is on a read-only file system)" in capsys.readouterr().err


def test_a_run_stopped_by_a_signal_says_so_and_how_to_go_on(
    capsys, tiny_data, tmp_path, monkeypatch
):
    def stopped(cfg, resume=None, global_batch=None, hashing=None):
        run = Path(cfg.out_dir) / "cut short"
        return {"iterations": 3, "best_val_loss": 5.25, "stop_reason": "stopped by a signal",
                "run_dir": str(run)}  # fmt: skip

    monkeypatch.setattr("hellolondon.train.loop.train", stopped)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--preset", "tiny", "--data", str(tiny_data), "train.max_iters=8"]
    assert main(argv) == 0  # asked for, and its checkpoint saved
    assert capsys.readouterr().out.splitlines()[-1] == (
        "stopped at iteration 3 of 8, best val loss 5.2500; go on with: "
        "hellolondon train --resume 'runs/cut short'"
    )


def test_a_finished_train_ignores_sigterm_only_as_its_process_exits(tiny_data, tmp_path):
    """A SIGTERM while the interpreter exits would turn a complete run into exit code 143, so
    it is ignored then; but a caller of `main` that goes on must keep its handler (its pool
    workers, forked after, used to ignore SIGTERM and could not be ended)."""
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--run-name", "x",
            *TINY_MODEL, *TINY_TRAIN, "train.max_iters=2"]  # fmt: skip
    program = (
        "import atexit, os, signal, sys\n"
        "from hellolondon.cli import main\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # runs last at exit\n"
        "before = signal.getsignal(signal.SIGTERM)\n"
        "code = main(sys.argv[1:])\n"
        "assert signal.getsignal(signal.SIGTERM) is before, 'changed before the exit'\n"
        "raise SystemExit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", program, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]  # not -15: the exit's SIGTERM was ignored


def test_existing_run_folder_is_not_overwritten(capsys, trained, tiny_data):
    before = (trained / "metrics.jsonl").read_bytes()
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(trained.parent),
            "--run-name", trained.name, *TINY_MODEL, *TINY_TRAIN]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "already exists" in err and "--resume" in err
    assert out == ""  # said before the model is built, not after its lines
    assert (trained / "metrics.jsonl").read_bytes() == before


def test_a_run_name_taken_by_a_file_is_one_line_and_the_file_is_kept(capsys, tiny_data, tmp_path):
    (tmp_path / "notes").write_text("mine")
    argv = ["train", "--data", str(tiny_data), "--out-dir", str(tmp_path), "--run-name", "notes"]
    err = _err(capsys, [*argv, *TINY_MODEL, *TINY_TRAIN])
    assert "is a file, not a folder" in err and "--run-name" in err
    assert (tmp_path / "notes").read_text() == "mine"


def test_resume_of_a_run_killed_before_its_first_checkpoint(capsys, trained, tmp_path):
    run = tmp_path / "early"  # what a run killed before its first save leaves
    run.mkdir()
    shutil.copy(trained / "config.json", run / "config.json")
    (run / "metrics.jsonl").write_text('{"train/iter": 1, "train/loss": 9.0}\n')
    err = _err(capsys, ["train", "--resume", str(run)])
    assert "before its first checkpoint" in err
    assert f"hellolondon train --config {run / 'config.json'} --run-name NEW_NAME" in err
    err = _err(capsys, ["train", "--resume", str(tmp_path / "nope")])
    assert "does not exist" in err
    # the same name again is not told to resume what has no checkpoint
    again = ["train", "--config", str(run / "config.json"), "--out-dir", str(tmp_path)]
    err = _err(capsys, [*again, "--run-name", "early"])
    assert "holds no checkpoint to resume" in err and "--resume" not in err
    assert main([*again, "--run-name", "early-2", "train.max_iters=3"]) == 0  # the advice works
    assert (tmp_path / "early-2" / "checkpoints").is_dir()


def test_resume_of_a_run_whose_config_json_is_cut_short_keeps_it(capsys, trained, tmp_path):
    run = tmp_path / "cut"
    shutil.copytree(trained, run)
    (run / "config.json").write_text('{"model": {"n_layer": 2,')  # a full disk mid-write
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    err = _err(capsys, ["train", "--resume", str(run), "train.max_iters=8"])
    assert "config.json is truncated or corrupt" in err and "move it away" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_with_a_preset_is_refused_not_ignored(capsys, trained):
    before = (trained / "metrics.jsonl").read_bytes()
    err = _err(capsys, ["train", "--resume", str(trained), "--preset", "slm"])
    assert "--preset slm does not apply with --resume" in err
    assert (trained / "metrics.jsonl").read_bytes() == before


def test_resume_with_another_run_name_is_refused_not_ignored(capsys, trained, tmp_path):
    before = (trained / "metrics.jsonl").read_bytes()
    err = _err(capsys, ["train", "--resume", str(trained), "--run-name", "branch"])
    assert f"--run-name branch does not apply with --resume {trained}" in err
    assert (trained / "metrics.jsonl").read_bytes() == before and not (
        trained.parent / "branch"
    ).exists()


def test_a_finished_run_resumed_with_other_settings_is_refused_and_its_record_kept(capsys, trained):
    """No step would use them, yet the run's config.json (and `reproduce`) would record them."""
    before = {n: (trained / n).read_bytes() for n in ("config.json", "metrics.jsonl")}
    err = _err(capsys, ["train", "--resume", str(trained), "train.seed=7"])
    assert err.endswith(
        "has trained all 6 iterations, so train.seed=7 would change no step; raise "
        "train.max_iters above 6 to train further with it"
    )
    err = _err(capsys, ["train", "--resume", str(trained), "train.max_iters=4"])
    assert "is at iteration 6, past train.max_iters=4; set train.max_iters above 6" in err
    assert {n: (trained / n).read_bytes() for n in before} == before


def test_resume_with_another_out_dir_is_refused_not_ignored(capsys, trained, tmp_path):
    err = _err(capsys, ["train", "--resume", str(trained), "--out-dir", str(tmp_path / "o")])
    assert f"--out-dir {tmp_path / 'o'} does not apply with --resume {trained}" in err
    assert not (tmp_path / "o").exists()


def test_a_resume_keeps_out_dir_as_the_run_recorded_it(trained, tmp_path, monkeypatch):
    from hellolondon.config import from_dict
    from hellolondon.train.checkpoint import read_state, resolve
    from hellolondon.train.resolve import resolve_config

    monkeypatch.chdir(trained.parent.parent)
    ckpt = resolve(trained)
    state = read_state(ckpt)
    cfg = from_dict(state["config"])
    cfg.out_dir = trained.parent.name  # relative, as given when it started
    meta = {"vocab_size": cfg.model.vocab_size}
    done = resolve_config(cfg, world=1, meta=meta, ckpt=ckpt, state=state, log=lambda *_: None)
    assert done.out_dir == trained.parent.name


def test_grad_accum_beside_global_batch_is_refused_not_replaced(capsys, tiny_data):
    argv = ["train", "--data", str(tiny_data), "--global-batch", "16", "train.grad_accum=4"]
    err = _err(capsys, argv)
    assert err.startswith("error: train.grad_accum=4 does not apply with --global-batch 16")


def test_a_checkpoint_state_without_its_config_is_named(capsys, trained, tmp_path):
    from hellolondon.train.checkpoint import resolve

    copy = tmp_path / "ckpt"
    shutil.copytree(resolve(trained), copy)
    state = json.loads((copy / "state.json").read_text())
    del state["config"]
    (copy / "state.json").write_text(json.dumps(state))
    err = _err(capsys, ["train", "--resume", str(copy)])
    said = f"error: {copy / 'state.json'} is incomplete (it has no config); resume an earlier "
    assert err.startswith(said)  # one line (`_err`)
    err = _err(capsys, ["generate", str(copy)])  # one thing to do, not a resume in `generate`
    assert err.startswith(f"error: {copy / 'state.json'} is incomplete (it has no config)")
    assert "resume" not in err


@pytest.mark.parametrize(
    "edit, said",
    [
        ({"step": "x"}, "its step is 'x', not a whole number >= 0"),
        ({"step": -5}, "its step is -5, not a whole number >= 0"),
        ({"step": None}, "its step is None, not a whole number >= 0"),
        ({"files": [1]}, "its files are not a map of names to sha256 digests"),
    ],
)
@pytest.mark.parametrize("command", ["generate", "eval", "export"])
def test_a_checkpoint_state_with_a_damaged_step_or_file_list_is_named(
    capsys, trained, tmp_path, edit, said, command
):
    from hellolondon.train.checkpoint import resolve

    copy = tmp_path / "ckpt"
    shutil.copytree(resolve(trained), copy)
    state = json.loads((copy / "state.json").read_text())
    state.update(edit)
    (copy / "state.json").write_text(json.dumps(state))
    argv = [command, str(copy)] + (["--out", str(tmp_path / "out")] * (command != "generate"))
    err = _err(capsys, argv)  # one line, exit 2, no report or export under a bogus step
    assert err.startswith(f"error: {copy / 'state.json'} is damaged: {said}")
    assert not (tmp_path / "out").exists()


def test_resume_with_another_architecture_names_what_differs(capsys, trained, tiny_data):
    argv = ["train", "--resume", str(trained), "model.n_embd=64", "model.n_layer=3"]
    err = _err(capsys, argv)
    assert "another architecture: model.n_layer=3 (it has 2), model.n_embd=64 (it has 32);" in err


def test_a_resume_may_change_dropout(capsys, trained, tmp_path):
    """Dropout is a training setting kept with the model's: the weights are the same."""
    run = tmp_path / "base"
    shutil.copytree(trained, run)
    argv = ["train", "--resume", str(run), "model.dropout=0.1", "train.max_iters=7"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["model"]["dropout"] == 0.1


def test_resume_with_token_files_of_another_tokenizer(capsys, trained, tiny_data, tmp_path):
    other = tmp_path / "data"
    shutil.copytree(tiny_data, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["tokenizer_fingerprint"] = "0" * 64
    (other / "meta.json").write_text(json.dumps(meta))
    err = _err(capsys, ["train", "--resume", str(trained), f"data.data_dir={other}"])
    assert "another tokenizer" in err


def test_generate_from_something_that_is_not_a_checkpoint(capsys, tmp_path):
    err = _err(capsys, ["generate", str(tmp_path)])
    assert "no checkpoint found" in err


@pytest.mark.parametrize("command", ["generate", "eval", "export"])
def test_a_run_whose_checkpoints_are_all_corrupt(capsys, trained, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for state in (run / "checkpoints").glob("*/state.json"):
        state.write_text('{"format"')  # cut short
    argv = [command, str(run)] + (["--out", str(tmp_path / "out")] if command == "export" else [])
    err = _err(capsys, argv)
    assert "no checkpoint under" in err and "truncated or corrupt (not valid JSON)" in err


@pytest.mark.parametrize("command", ["generate", "eval", "export", "train"])
def test_a_checkpoint_of_a_newer_version_says_to_upgrade(capsys, trained, tmp_path, command):
    # never a fall back past it to an older checkpoint: a resume would abandon its steps
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = sorted((run / "checkpoints").glob("step-*"))[-1] / "state.json"
    state = json.loads(newest.read_text())
    newest.write_text(json.dumps(state | {"format": 99}))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    argv = {
        "generate": ["generate", str(run)],
        "eval": ["eval", str(run), "--no-heldout", "--no-generation", "--no-track"],
        "export": ["export", str(run), "--out", str(tmp_path / "out")],
        "train": ["train", "--resume", str(run), "--wandb-mode", "disabled"],
    }[command]
    err = _err(capsys, argv)
    assert "checkpoint format 99, from a newer hellolondon" in err and "upgrade" in err
    assert "corrupt" not in err and "give another checkpoint" not in err
    assert "resume an earlier checkpoint" not in err  # only an upgrade helps
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_resume_from_another_folder_finds_the_data_the_run_recorded(
    trained, tiny_data, tmp_path, monkeypatch
):
    """A run trained with `--data work/data` names its data relative to where it was started;
    its config.json also records the absolute folder, which a resume takes from elsewhere."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for state_file in run.glob("checkpoints/*/state.json"):
        state = json.loads(state_file.read_text())
        state["config"]["data"]["data_dir"] = "work/data"
        state_file.write_text(json.dumps(state))
    monkeypatch.chdir(tmp_path)  # holds no work/data
    argv = ["train", "--resume", str(run), "train.max_iters=7", "--wandb-mode", "disabled"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["data_dir"] == str(tiny_data.resolve())
    changed = config["reproduce"]["resumes"][-1]["settings_changed"]
    assert changed == {"train.max_iters": [6, 7]}  # the data folder is the same one


def test_resume_of_nothing_says_what_to_give_and_no_more(capsys, tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run.json").write_text("{}")
    for given, said in [
        (tmp_path / "missing", "does not exist; give a run folder or a checkpoint folder"),
        (tmp_path / "run", "no checkpoint found at"),
        (tmp_path / "run.json", "is a file, not a folder; give a run folder or a checkpoint"),
    ]:
        err = _err(capsys, ["train", "--resume", str(given), "--wandb-mode", "disabled"])
        assert said in err and "resume an earlier checkpoint" not in err, err


def test_resume_of_a_folder_of_runs_names_the_runs_in_it(capsys, tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "metrics.jsonl").write_text("")
    err = _err(capsys, ["train", "--resume", str(tmp_path / "runs"), "--wandb-mode", "disabled"])
    assert err.strip() == (
        f"error: {tmp_path / 'runs'} holds run folders, it is not one; give a run folder in it, "
        f"such as: {tmp_path / 'runs' / 'a'}"
    )


def test_a_checkpoint_of_a_setting_this_version_lacks_names_the_setting(capsys, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for path in (run / "checkpoints").glob("*/state.json"):
        state = json.loads(path.read_text())
        state["config"]["monitor"]["from_a_newer_version"] = 1
        path.write_text(json.dumps(state))
    err = _err(capsys, ["generate", str(run)])
    assert "monitor.from_a_newer_version" in err and "can be read" in err


def test_generate_with_a_prompt_longer_than_the_context_continues_its_end(capsys, trained):
    prompt = "word " * 200
    argv = [
        "generate",
        str(trained),
        "--prompt",
        prompt,
        "--device",
        "cpu",
        "--max-new-tokens",
        "5",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith(prompt) and len(out) > len(prompt)
    assert "more than the model's context" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_a_device_this_machine_lacks_is_named_with_the_flag_to_use(
    capsys, trained, monkeypatch, command
):
    """`generate` and `eval` take the device as a flag, so the advice is that flag, not the
    config's `device=cpu`, which they would refuse."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    err = _err(capsys, [command, str(trained), "--device", "cuda"])
    assert "no CUDA GPU" in err and err.endswith("use --device cpu")


def test_interactive_generate_takes_a_prompt_longer_than_the_context(capsys, trained, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("word " * 200 + "\nKING.\n\n"))
    argv = ["generate", str(trained), "--interactive", "--max-new-tokens", "4", "--device", "cpu"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "more than the model's context" in err and "KING." in out and "word word" in out


def test_generate_from_the_starting_weights_says_they_are_untrained(capsys, trained, tmp_path):
    """A run stopped before its first step saved step 0: random weights, random text."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    state = json.loads((newest / "state.json").read_text())
    (newest / "state.json").write_text(json.dumps(state | {"step": 0}))
    argv = ["generate", str(newest), "--prompt", "KING.", "--max-new-tokens", "3"]
    assert main(argv + ["--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("KING.") and "step 0, before any training step" in err
    assert main(["generate", str(trained), "--max-new-tokens", "3", "--device", "cpu"]) == 0
    assert "step 0" not in capsys.readouterr().err


def test_generate_without_the_tokenizer(capsys, trained, tmp_path):
    ckpt = tmp_path / "lonely"
    shutil.copytree(trained / "checkpoints" / "best", ckpt)
    err = _err(capsys, ["generate", str(ckpt)])
    assert "no tokenizer" in err


@pytest.mark.parametrize("command", ["generate", "eval", "export"])
def test_a_tokenizer_other_than_the_training_one(capsys, trained, tmp_path, command):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for path in (run / "checkpoints").glob("*/state.json"):
        state = json.loads(path.read_text())
        state["tokenizer_fingerprint"] = "0" * 64  # as if trained with another tokenizer
        path.write_text(json.dumps(state))
    argv = [command, str(run)] + (["--out", str(tmp_path / "out")] if command == "export" else [])
    err = _err(capsys, argv)
    assert f"the tokenizer in {run / 'tokenizer'}" in err and "(000000000000)" in err
    assert "put the training tokenizer there" in err and not (tmp_path / "out").exists()


def test_checkpoint_of_another_architecture(capsys, trained, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step-000006"
    shutil.copytree(trained / "checkpoints" / "step-000006", ckpt)
    shutil.copytree(trained / "tokenizer", tmp_path / "run" / "tokenizer")
    state = json.loads((ckpt / "state.json").read_text())
    state["config"]["model"]["n_embd"] = 64
    (ckpt / "state.json").write_text(json.dumps(state))
    err = _err(capsys, ["generate", str(ckpt)])
    assert f"the weights of {ckpt} do not fit the model its state.json describes (" in err
    assert "size mismatch for" in err and err.endswith("); give another checkpoint")


def test_generate_writes_text(capsys, trained):
    assert (
        main(
            [
                "generate",
                str(trained),
                "--prompt",
                "KING.",
                "--max-new-tokens",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("KING.")


def test_debug_shows_the_traceback(tmp_path):
    from hellolondon.errors import UserError

    with pytest.raises(UserError):
        main(["generate", str(tmp_path), "--debug"])


def test_generate_interactive_until_an_empty_line(capsys, trained, monkeypatch):
    answers = iter(["KING.", "QUEEN.", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert (
        main(
            ["generate", str(trained), "--interactive", "--max-new-tokens", "4", "--device", "cpu"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "KING." in out and "QUEEN." in out


def test_train_bin_shorter_than_two_contexts(capsys, tiny_data, tmp_path):
    data = tmp_path / "short"
    shutil.copytree(tiny_data, data)
    tokens = (data / "train.bin").read_bytes()[: 50 * 2]  # 50 uint16 tokens; block_size 32
    (data / "train.bin").write_bytes(tokens)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps(dict(meta, train_tokens=50)))
    argv = ["train", "--data", str(data), "--out-dir", str(tmp_path / "runs")]
    err = _err(capsys, [*argv, *TINY_MODEL, *TINY_TRAIN])
    assert "train.bin" in err and "has 50 tokens" in err and "needs at least 65" in err
    assert "model.block_size=24 or less" in err


def test_console_lines_reach_a_pipe_as_they_are_printed():
    # Piped (`| tee log`) stdout is block-buffered by default: without line buffering the
    # model summary printed before the timed steps would arrive with the results at the end.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    src = str(Path(hellolondon.__file__).resolve().parents[1])
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([src, env.get("PYTHONPATH", "")]))
    argv = ["bench", "--preset", "tiny", "--device", "cpu", "--steps", "15", "--warmup", "0",
            "--batch-size", "2", "--block-size", "16", "--vocab-size", "256",
            "model.n_layer=1", "train.compile=false"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "hellolondon", *argv], stdout=subprocess.PIPE, text=True, env=env
    )
    arrivals = [(time.monotonic(), line) for line in proc.stdout]
    assert proc.wait(timeout=300) == 0
    assert arrivals[0][1].startswith("Model parameters:")
    timed = next(a for a in arrivals if "ms/iter" in a[1])
    # The first line came while the steps were still running, not with the results.
    steps_s = timed[0] - arrivals[0][0]
    ms_per_iter = float(timed[1].split("ms/iter")[0].split()[-1])
    assert steps_s > 0.5 * 15 * ms_per_iter / 1000  # buffered, both lines would come at once


def test_output_cut_short_by_its_reader_is_not_an_error():
    # `hellolondon compare ... --json | head`: the reader leaves before the output is written
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(hellolondon.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "hellolondon", "config", "--preset", "tiny"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdout.close()  # before the command has printed anything
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == ""


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),  # Python's own writes
        RuntimeError("I/O error: No space left on device (os error 28)"),  # as safetensors says
    ],
)
def test_a_full_disk_is_named_with_what_to_do(capsys, tmp_path, monkeypatch, failure):
    def full(_path):
        raise failure

    monkeypatch.setattr("hellolondon.corpus.sample.write_sample", full)
    err = _err(capsys, ["corpus", "sample", "--out", str(tmp_path / "docs.jsonl")])
    assert err == "error: the disk is full; free some space or write to another disk"


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (OSError(30, "Read-only file system", "/ro/.docs.jsonl.tmp-77"), "read-only file system"),
        (PermissionError(13, "Permission denied", "/ro/docs.jsonl"), "permission denied"),
    ],
)
def test_a_path_that_cannot_be_written_is_named_as_the_user_knows_it(
    capsys, tmp_path, monkeypatch, failure, said
):
    def refuse(_path):
        raise failure

    monkeypatch.setattr("hellolondon.corpus.sample.write_sample", refuse)
    err = _err(capsys, ["corpus", "sample", "--out", str(tmp_path / "docs.jsonl")])
    assert err == f"error: /ro/docs.jsonl: {said}; use another path or change its permissions"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_a_path_where_nothing_can_be_made_is_one_line(capsys):
    assert main(["corpus", "sample", "--out", "/proc/no-such/d.jsonl"]) == 2  # bad input
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: /proc/no-such: no such file or folder, and it cannot be made there; check the "
        "path or use another one"
    )


def test_a_file_where_a_folder_is_needed_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("kept")
    assert main(["corpus", "sample", "--out", str(tmp_path / "afile" / "d.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path / 'afile'}: a file stands where a folder is needed on that path; use "
        "another path or move the file\n"
    )
    assert main(["watch", str(tmp_path), "--interval", "nan"]) == 2
    assert "--interval must be a number of seconds above 0" in capsys.readouterr().err


def test_a_file_given_for_a_folder_and_a_folder_for_a_file_are_named_as_such(tmp_path, capsys):
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "dir").mkdir()
    cases = [
        (["train", "--data", str(tmp_path / "docs.jsonl")], "is a file, not a folder of token"),
        (["train", "--config", str(tmp_path / "dir")], "is a folder; give the config file"),
        (["tokenizer", "encode", "--tokenizer", str(tmp_path / "docs.jsonl"), "x"],
         "is not a tokenizer; give the folder"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_ctrl_c_while_the_command_line_is_read_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first fraction of a second (the subcommands being registered) is said
    as any other Ctrl-C: `interrupted`, exit 130, no traceback; --debug keeps it."""
    import hellolondon.cli as cli

    def pressed() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", pressed)
    assert main(["tokenizer", "train"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "tokenizer", "train"])


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["prepare", "--corpus", "c.jsonl", "--tokenizer", "tok", "--out", ""], "--out"),
        (["prepare", "--corpus", " ", "--tokenizer", "tok", "--out", "data"], "--corpus"),
        (["prepare", "--corpus", "c.jsonl", "--tokenizer", "", "--out", "data"], "--tokenizer"),
        (["tokenizer", "train", "--corpus", "c.jsonl", "--out", ""], "--out"),
        (["tokenizer", "encode", "--tokenizer", "", "text"], "--tokenizer"),
        (["tokenizer", "terms", "--tokenizer", "tok", "--corpus", ""], "--corpus"),
        (["corpus", "sample", "--out", ""], "--out"),
        (["corpus", "collect", "--offline", "--out", ""], "--out"),
        (["corpus", "catalog", "--catalog", ""], "--catalog"),
        (["corpus", "clean", "--extra", "a.txt", "--out", ""], "--out"),
        (["corpus", "clean", "--in", "", "--extra", "a.txt"], "--in"),
        (["corpus", "clean", "--extra", "a.txt", "--extra", ""], "--extra"),
        (["corpus", "report", "--documents", ""], "--documents"),
        (["train", "--data", ""], "--data"),
        (["train", "--out-dir", " "], "--out-dir"),
        (["train", "--resume", ""], "--resume"),
        (["train", "--config", ""], "--config"),
        (["eval", "run", "--out", ""], "--out"),
        (["eval", "run", "--probes", ""], "--probes"),
        (["reproduce", "run", "--data", ""], "--data"),
        (["launch", "--yes", "--dry-run", "--sample-dir", ""], "--sample-dir"),
        (["demo", "--work", ""], "--work"),
        (["runs", "--out-dir", ""], "--out-dir"),
        (["config", "--config", ""], "--config"),
        (["bench", "--profile", ""], "--profile"),
        (["report", "run", "--out", ""], "--out"),
        (["export", "run", "--out", ""], "--out"),
        (["sweep", "s.yaml", "--out-dir", ""], "--out-dir"),
    ],
)
def test_a_blank_path_is_refused_not_read_as_the_current_folder(
    argv, flag, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("The watermen of Southwark. " * 200)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} is blank; give a path") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # nothing written here
