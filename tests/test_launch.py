"""`train --gpus N` checks and the interactive launcher: every bad request is one line before
anything starts; the menu asks, shows the exact command and runs it; flags make it silent."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import pexpect
import pytest
import torch
from test_distributed import make_tokens

from hellolondon.cli import build_parser, main
from hellolondon.config import build_config
from hellolondon.errors import UserError
from hellolondon.launch import Menu, launch
from hellolondon.provenance import LAUNCHER_COMMAND, collect
from hellolondon.train.torchrun import check_gpus, check_port

TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=32",
    "train.batch_size=4",
    "train.eval_interval=0",
    "train.log_interval=1",
    "train.sample_interval=0",
    "monitor.enabled=false",
]
KEY = "0123456789abcdef" * 2 + "fedcba98"  # the shape of a W&B key (40 characters)
cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks what a machine without CUDA says"
)


@pytest.fixture(autouse=True)
def no_stored_wandb_login(tmp_path, monkeypatch):
    """Never the user's own `wandb login` or WANDB_MODE: the W&B default depends on them."""
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_MODE", raising=False)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return make_tokens(tmp_path_factory.mktemp("tokens"))


def test_gpu_requests_are_checked_against_the_machine(monkeypatch):
    check_gpus(2, "cpu", 0)  # CPU processes need no GPU
    monkeypatch.setattr("hellolondon.prepare.usable_cpus", lambda: 2)
    check_gpus(8, "cpu", 0)  # more ranks than CPUs: slow, but allowed
    with pytest.raises(UserError, match=r"--gpus 9 device=cpu starts 9 training processes for "
                       r"the 2 CPUs this process may use; give at most 8"):  # fmt: skip
        check_gpus(9, "cpu", 0)  # a slip (--gpus 100000) would swamp the machine
    check_gpus(2, "auto", 2)
    with pytest.raises(UserError, match="more GPUs than the 2 this machine shows"):
        check_gpus(4, "auto", 2)
    with pytest.raises(
        UserError, match="asks for CUDA GPUs but this machine has none; add device=cpu"
    ):
        check_gpus(2, "cuda", 0)
    with pytest.raises(UserError, match="names one device"):
        check_gpus(2, "cuda:1", 4)
    with pytest.raises(UserError, match="at least 1"):
        check_gpus(0, "auto", 2)


def test_a_busy_port_is_refused_and_a_free_one_picked():
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} is in use"):
            check_port(port)
    assert 1024 <= check_port(None) <= 65535


def _one_line_error(capsys, argv: list[str], out: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not any(out.iterdir()), "nothing may start before the error"
    return err


@cpu_only
def test_bad_requests_are_one_line_before_any_work(tokens, tmp_path, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    base = ["train", "--data", str(tokens), "--out-dir", str(out)]
    assert "asks for CUDA GPUs but this machine has none" in _one_line_error(
        capsys, [*base, "--gpus", "2", *TINY], out
    )
    assert "CUDA was asked for but this machine has no CUDA GPU" in _one_line_error(
        capsys, [*base, *TINY, "device=cuda"], out
    )
    err = _one_line_error(
        capsys, [*base, "--gpus", "3", "--global-batch", "16", *TINY, "device=cpu"], out
    )
    assert "global batch of 16 sequences cannot be split evenly over 3 processes" in err
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        err = _one_line_error(
            capsys, [*base, "--gpus", "2", "--master-port", port, *TINY, "device=cpu"], out
        )
    assert f"port {port} is in use" in err
    err = _one_line_error(capsys, [*base, "--master-port", "29500", *TINY, "device=cpu"], out)
    assert "--master-port 29500 applies only with --gpus" in err


def test_global_batch_sets_the_split_for_the_world_size(tokens, tmp_path):
    from hellolondon.cli.train_command import config_from_args
    from hellolondon.prepare import load_meta
    from hellolondon.train.resolve import resolve_config

    args = build_parser().parse_args(
        ["train", "--data", str(tokens), "--global-batch", "64", "batch_size=16"]
    )
    cfg = resolve_config(
        config_from_args(args), world=2, meta=load_meta(tokens), global_batch=args.global_batch
    )
    assert (cfg.train.batch_size, cfg.train.grad_accum) == (16, 2)


def test_each_rank_gets_the_config_resolved_once_by_the_launcher(tokens, tmp_path, monkeypatch):
    from hellolondon.train import torchrun

    seen = {}

    def fake_torchrun(cmd, env):  # what each rank would be started with
        seen["cmd"], seen["env"] = cmd, env
        path = cmd[cmd.index("--resolved-config") + 1]
        seen["config"] = json.loads(Path(path).read_text(encoding="utf-8"))
        return 0, None

    monkeypatch.setattr(torchrun, "_run_child", fake_torchrun)
    argv = ["train", "--data", str(tokens), "--out-dir", str(tmp_path), "--gpus", "2"]
    argv += ["--global-batch", "8", "--wandb-mode", "offline", *TINY, "device=cpu"]
    monkeypatch.setattr(sys, "argv", ["hellolondon", *argv])  # as typed
    assert main(argv) == 0
    cfg = seen["config"]
    assert "--gpus" not in seen["cmd"] and "--global-batch" not in seen["cmd"]
    assert cfg["tracking"]["run_name"].startswith("london-tiny-demo-")
    assert (cfg["train"]["batch_size"], cfg["train"]["grad_accum"]) == (4, 1)
    assert (
        cfg["tracking"]["project"] == "helloLondon" and cfg["tracking"]["wandb_mode"] == "offline"
    )
    assert cfg["train"]["eval_seqs"] > 0 and cfg["model"]["vocab_size"] > 0
    # the ranks record the launcher's command, not their own (a temporary file's)
    monkeypatch.setenv(LAUNCHER_COMMAND, seen["env"][LAUNCHER_COMMAND])
    recorded = collect({}, tokens, seed=1, argv=seen["cmd"])["command"]
    assert recorded == seen["env"][LAUNCHER_COMMAND]
    assert "--resolved-config" not in recorded and "--gpus 2" in recorded


def test_a_launch_removes_the_files_a_killed_launcher_left(tokens, tmp_path, monkeypatch):
    from hellolondon.train import torchrun

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()  # a launcher killed outright: its pid names no process now
    dead, alive = ended.pid, os.getpid()
    old = [f"hellolondon-config-{dead}-a1b2c3d4.json", f"hellolondon-tokens-{dead}-e5f6g7h8.json"]
    kept = [
        f"hellolondon-config-{alive}-a1b2c3d4.json",  # a live launcher's: its ranks may read it
        "hellolondon-config-a1b2c3d4.json",  # no pid to tell whose it is
        f"other-config-{dead}-a1b2c3d4.json",
    ]
    for name in [*old, *kept]:
        (temp / name).write_text("{}", encoding="utf-8")
        os.utime(temp / name, (time.time() - 120, time.time() - 120))
    (temp / f"hellolondon-config-{dead}-young123.json").write_text("{}", encoding="utf-8")
    kept.append(f"hellolondon-config-{dead}-young123.json")  # a minute old at least, to go
    handed = []

    def fake_torchrun(cmd, env):
        handed.append(Path(cmd[cmd.index("--resolved-config") + 1]))
        assert json.loads(handed[0].read_text(encoding="utf-8"))["train"]["batch_size"] == 4
        return 0, None

    monkeypatch.setattr(torchrun, "_run_child", fake_torchrun)
    argv = ["train", "--data", str(tokens), "--out-dir", str(tmp_path / "runs"), "--gpus", "2"]
    assert main([*argv, "--wandb-mode", "disabled", *TINY, "device=cpu"]) == 0
    assert handed[0].parent == temp and handed[0].name.startswith(f"hellolondon-config-{alive}-")
    assert sorted(p.name for p in temp.iterdir()) == sorted(kept)


@pytest.mark.parametrize("ended", [True, False], ids=["after-the-checkpoint", "mid-step"])
def test_a_second_ctrl_c_to_the_launcher_is_an_abort_only_while_the_ranks_train(
    tokens, tmp_path, monkeypatch, capsys, ended
):
    """A second Ctrl-C that lands after the ranks had stopped and saved (the first one's
    doing) ends nothing: the launcher says how to go on, as after one. Before that it aborts:
    "interrupted", exit code 130, the run recorded as aborted."""
    from hellolondon.rundir import RunDir
    from hellolondon.train import torchrun

    run = RunDir(tmp_path / "runs" / "r")

    def fake_torchrun(cmd, env):  # the ranks' trace, then the launcher's second SIGINT
        run.path.mkdir(parents=True)
        (run.checkpoints / "step-000004").mkdir(parents=True)
        (run.checkpoints / "step-000004" / "state.json").write_text("{}", encoding="utf-8")
        run.mark_training()
        log = run.metrics_log()
        log.write({"step": 4, "train/loss": 5.0})
        log.close()
        if ended:
            run.update_summary({"stopped_early": True, "stop_reason": "stopped by a signal"})
            run.mark_ended()
        raise KeyboardInterrupt

    monkeypatch.setattr(torchrun, "_run_child", fake_torchrun)
    argv = ["train", "--data", str(tokens), "--out-dir", str(tmp_path / "runs"), "--gpus", "2"]
    code = main([*argv, "--run-name", "r", "--wandb-mode", "disabled", *TINY, "device=cpu"])
    out, err = capsys.readouterr()
    if ended:
        assert code == 0 and "stopped by SIGINT after checkpoint" in out
        assert run.status() == ("stopped", "stopped by a signal")
    else:
        assert code == 130 and err.strip().endswith("interrupted")
        assert run.status() == ("aborted", "by a second Ctrl-C at step 4")


def _launch_args(tmp_path: Path, *flags: str):
    return build_parser().parse_args(
        [
            "launch",
            "--out-dir",
            str(tmp_path / "runs"),
            "--sample-dir",
            str(tmp_path / "sample"),
            *flags,
        ]
    )


def _scripted(answers: list[str], said: list[str]) -> Menu:
    feed = iter(answers)

    def ask(prompt: str) -> str:
        said.append(prompt)
        return next(feed)

    return Menu(interactive=True, ask=ask, say=said.append)


def test_the_menu_offers_the_gpus_it_finds_and_builds_a_torchrun_command(
    tokens, tmp_path, monkeypatch
):
    for where in ("hellolondon.launch", "hellolondon.train.torchrun"):  # the menu, the check
        monkeypatch.setattr(f"{where}.gpu_names", lambda: ["NVIDIA H100 80GB HBM3"] * 2)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    said: list[str] = []
    # preset: slm; data: another folder, first a wrong one; GPUs: Enter (all); W&B: Enter (online)
    menu = _scripted(["2", "2", str(tmp_path), str(tokens), "", ""], said)
    assert launch(_launch_args(tmp_path, "--dry-run"), menu) == 0
    text = "\n".join(said)
    assert "GPUs: 2 (NVIDIA H100 80GB HBM3)" in text and "\nGPUs to use (1-2) [2]: " in said
    assert "has no train.bin, val.bin and meta.json; try again" in text
    assert "WANDB_API_KEY is set" in text and KEY not in text
    assert said[-1] == (
        f"$ hellolondon train --preset slm --data {tokens} --out-dir {tmp_path / 'runs'} "
        "--wandb-mode online --gpus 2"
    )


def test_a_run_on_the_cpu_or_on_one_device_is_one_process_whatever_gpus_there_are(
    tmp_path, monkeypatch, capsys
):
    """`--gpus` gives each process a GPU of its own: with device=cpu the launcher's GPUs must
    not make CPU processes, and with device=cuda:N `train --gpus` would refuse the command."""
    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: ["NVIDIA H100 80GB HBM3"] * 2)
    for device in ("device=cpu", "device=cuda:1"):
        args = _launch_args(tmp_path, "--yes", "--dry-run", "--fresh", "--preset", "tiny",
                            "--data", "sample", "--wandb-mode", "disabled", device)  # fmt: skip
        assert launch(args) == 0
        command = capsys.readouterr().out.rstrip().splitlines()[-1]
        assert command.endswith(f"--wandb-mode disabled {device}") and "--gpus" not in command


def test_the_menu_can_resume_a_run_it_finds(tokens, tmp_path, monkeypatch):
    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: [])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    ckpt = tmp_path / "runs" / "old-run" / "checkpoints" / "step-000010"
    ckpt.mkdir(parents=True)
    # the launcher checks the settings it resumes, as train would: its data among them
    vocab = json.loads((tokens / "meta.json").read_text())["vocab_size"]
    config = build_config("tiny", overrides=[f"data.data_dir={tokens}", f"vocab_size={vocab}"])
    state = {"format": 2, "step": 10, "config": config.to_dict()}
    (ckpt / "state.json").write_text(json.dumps(state))
    said: list[str] = []
    menu = _scripted(["2", "4"], said)  # resume it; W&B disabled (1: as the run had it)
    assert launch(_launch_args(tmp_path, "--dry-run"), menu) == 0
    assert any("resume " in s and "old-run (from step-000010)" in s for s in said)
    # the checkpoint has its own settings, its token files among them
    assert not any("Model preset" in s or "Data" in s for s in said)
    assert said[-1] == (  # no --out-dir: a resumed run goes on in its own folder
        f"$ hellolondon train --resume {tmp_path / 'runs' / 'old-run'} --wandb-mode disabled"
    )
    said.clear()  # a folder given as a flag is passed on
    args = _launch_args(tmp_path, "--dry-run", "--data", str(tokens))
    assert launch(args, _scripted(["2", "3"], said)) == 0
    assert said[-1].startswith(
        f"$ hellolondon train --resume {tmp_path / 'runs' / 'old-run'} --data {tokens} "
    )
    said.clear()  # --yes: the run keeps its own W&B mode, as `train --resume` does
    args = _launch_args(
        tmp_path, "--yes", "--dry-run", "--resume", str(tmp_path / "runs" / "old-run")
    )
    assert launch(args, Menu(interactive=False, say=said.append)) == 0
    assert said[-1] == f"$ hellolondon train --resume {tmp_path / 'runs' / 'old-run'}"


def test_dry_run_refuses_what_train_would_refuse_at_once(tokens, tmp_path, monkeypatch, capsys):
    """A printed command must not fail as soon as it runs: a device the machine lacks, or a
    global batch the process count does not divide."""
    from hellolondon.cli import main

    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: [])
    base = ["launch", "--yes", "--dry-run", "--out-dir", str(tmp_path / "runs")]
    assert main([*base, "--data", str(tokens), "device=cuda"]) == 2
    assert capsys.readouterr().err.endswith(
        "error: CUDA was asked for but this machine has no CUDA GPU; use device=cpu\n"
    )
    # a run of 2 processes x 4 sequences resumed on 3
    vocab = json.loads((tokens / "meta.json").read_text())["vocab_size"]
    settings = [f"data.data_dir={tokens}", f"vocab_size={vocab}", "batch_size=4"]
    config = build_config("tiny", overrides=settings).to_dict()
    ckpt = tmp_path / "runs" / "two" / "checkpoints" / "step-000010"
    ckpt.mkdir(parents=True)
    state = {"format": 2, "step": 10, "config": config, "world_size": 2}
    (ckpt / "state.json").write_text(json.dumps(state))
    resume = ["--resume", str(ckpt.parent.parent), "--gpus", "3", "--wandb-mode", "disabled"]
    assert main([*base[:3], *resume, "device=cpu"]) == 2
    assert "a global batch of 8 sequences cannot be split evenly over 3 processes" in (
        capsys.readouterr().err
    )


def test_flags_answer_every_question(tokens, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: ["A100"] * 2)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    args = _launch_args(
        tmp_path,
        "--yes",
        "--dry-run",
        "--preset",
        "tiny",
        "--data",
        "sample",
        "--gpus",
        "2",
        "--fresh",
    )
    assert launch(args) == 0
    out = capsys.readouterr().out
    assert "WANDB_API_KEY is set" in out and KEY not in out
    assert f"first: prepare the bundled sample into {tmp_path / 'sample'}" in out
    assert out.rstrip().endswith(
        f"$ hellolondon train --preset tiny --data {tmp_path / 'sample' / 'data'} "
        f"--out-dir {tmp_path / 'runs'} --wandb-mode online --gpus 2"
    )
    with pytest.raises(UserError, match="--gpus 3 asks for more GPUs than the 2"):
        launch(_launch_args(tmp_path, "--yes", "--gpus", "3"))
    # CPU processes, as `train --gpus 3 device=cpu` starts them: the GPU count does not limit
    args = _launch_args(tmp_path, "--yes", "--dry-run", "--fresh", "--preset", "tiny", "--data",
                        "sample", "--gpus", "3", "device=cpu")  # fmt: skip
    assert launch(args) == 0
    assert capsys.readouterr().out.rstrip().endswith("--gpus 3 device=cpu")
    args = _launch_args(tmp_path, "--yes", "--dry-run", "--fresh", "--preset", "tiny", "--data",
                        "sample", "--gpus", "3", "train.device = cpu")  # fmt: skip
    assert launch(args) == 0  # the setting as `train` reads it, whatever its spelling
    capsys.readouterr()
    with pytest.raises(UserError, match="unknown config key 'devise'"):
        launch(_launch_args(tmp_path, "--yes", "--fresh", "--gpus", "3", "devise=cpu"))
    with pytest.raises(UserError, match="is not a prepared folder"):
        launch(_launch_args(tmp_path, "--yes", "--data", str(tmp_path)))


def test_gpus_0_runs_on_the_cpu_as_the_help_says(tokens, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: ["A100"] * 2)
    args = _launch_args(tmp_path, "--yes", "--dry-run", "--fresh", "--preset", "tiny", "--data",
                        str(tokens), "--gpus", "0", "--wandb-mode", "disabled")  # fmt: skip
    assert launch(args) == 0
    assert capsys.readouterr().out.rstrip().endswith("--wandb-mode disabled train.device=cpu")


def test_a_dry_run_checks_the_run_and_the_settings_it_shows(tokens, tmp_path):
    with pytest.raises(UserError, match="does not exist; give a run folder"):
        launch(_launch_args(tmp_path, "--yes", "--dry-run", "--resume", str(tmp_path / "no")))
    args = _launch_args(tmp_path, "--yes", "--dry-run", "--fresh", "--data", str(tokens), "lrr=3")
    with pytest.raises(UserError, match="unknown config key 'lrr'"):
        launch(args)


def test_an_empty_folder_answer_goes_back_to_the_data_list(tokens, tmp_path, monkeypatch):
    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: [])
    said: list[str] = []
    # preset: Enter; data: another folder, then Enter (back), then another folder again
    menu = _scripted(["", "2", "", "2", str(tokens), "3"], said)
    assert launch(_launch_args(tmp_path, "--dry-run", "--fresh"), menu) == 0
    assert sum(s == "\nData" for s in said) == 2 and "has no train.bin" not in "\n".join(said)
    assert said[-1].startswith(f"$ hellolondon train --preset tiny --data {tokens} ")


@pytest.mark.parametrize(
    "stored, env, said, mode",
    [
        (True, {}, "a key from `wandb login` is stored", "online"),
        (True, {"WANDB_MODE": "disabled"}, "; WANDB_MODE=disabled", "disabled"),
        (False, {"WANDB_API_KEY": "too-short"}, "rejected: API key must have 40+", "offline"),
    ],
)
def test_the_wandb_default_is_the_mode_train_would_choose(
    stored, env, said, mode, tokens, tmp_path, monkeypatch, capsys
):
    # the W&B guide's second way to set the key is `wandb login`, with no WANDB_API_KEY
    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: [])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    if stored:  # where `wandb login` stores it: under the host of the installed W&B's default
        import wandb

        host = urlparse(wandb.Settings().base_url).netloc
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine {host}\n  login user\n  password {KEY}\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = _launch_args(tmp_path, "--yes", "--dry-run", "--data", str(tokens), "--fresh")
    assert launch(args) == 0
    out = capsys.readouterr().out
    assert said in out and KEY not in out
    assert out.rstrip().endswith(f"--wandb-mode {mode}")


@pytest.mark.slow
def test_the_interactive_launcher_in_a_terminal_runs_what_it_shows(tokens, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "hellolondon",
        "launch",
        "--out-dir",
        "runs",
        "--sample-dir",
        "sample",
        *TINY,
        "train.max_iters=2",
        "train.warmup_iters=1",
        "train.device=cpu",
    ]
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=90)
    child.expect("GPUs: none found")
    child.expect_exact("Model preset")
    child.expect_exact("choose 1-3 [1]: ")
    child.sendline("7")
    child.expect("please answer with a number from 1 to 3")
    child.sendline("1")
    child.expect_exact("1) the bundled sample")
    child.expect_exact("2) another prepared folder")
    child.expect_exact("choose 1-2 [1]: ")
    child.sendline("2")
    child.expect_exact("prepared folder (Enter: back to the list): ")
    child.sendline(str(tokens))
    child.expect("WANDB_API_KEY is not set")
    child.expect_exact("choose 1-3 [2]: ")  # offline without a key
    child.sendline("3")
    shown = f"$ hellolondon train --preset tiny --data {tokens} --out-dir runs --wandb-mode disabled {' '.join(TINY)}"
    child.expect_exact(shown)
    child.expect_exact("Run it? [Y/n]: ")
    child.sendline("")
    child.expect_exact("done: 2 iterations")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert len(list((tmp_path / "runs").glob("london-tiny-demo-*/checkpoints/step-000002"))) == 1


def test_gpus_1_goes_through_torchrun_too(tokens, tmp_path, monkeypatch):
    """`--gpus N` always means N torchrun processes, one included: the distributed path (NCCL
    on a GPU, DDP or FSDP) checked on one device. A plain `train` stays one process."""
    from hellolondon.train import torchrun

    seen = {}

    def fake_torchrun(cmd, env):
        seen["cmd"] = cmd
        return 0, None

    monkeypatch.setattr(torchrun, "_run_child", fake_torchrun)
    argv = ["train", "--data", str(tokens), "--out-dir", str(tmp_path), "--gpus", "1"]
    assert main([*argv, "--wandb-mode", "disabled", *TINY, "device=cpu"]) == 0
    assert "--nproc-per-node=1" in seen["cmd"]


def test_a_torchrun_process_starts_a_group_even_alone(monkeypatch):
    import torch.distributed as dist

    from hellolondon.train.distributed import init_distributed, shutdown
    from hellolondon.train.torchrun import check_port

    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(check_port(None))}.items():
        monkeypatch.setenv(k, v)
    d = init_distributed("cpu", fsdp=True)
    try:
        assert d.enabled and d.fsdp and d.world_size == 1 and dist.is_initialized()
    finally:
        shutdown(d)
    assert not dist.is_initialized()


def test_a_closed_standard_input_is_no_answer(tmp_path, monkeypatch, capsys):
    from hellolondon.cli import main

    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: [])
    monkeypatch.setattr("sys.stdin", None)  # as `hellolondon launch <&-` starts
    assert main(["launch", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: no answer on standard input; give the choices as flags and add --yes\n"


@cpu_only
@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "1e15"])
def test_a_bad_collective_timeout_is_one_line_before_any_work(
    value, tokens, tmp_path, capsys, monkeypatch
):
    import torch.distributed as dist

    from hellolondon.train.distributed import init_distributed

    monkeypatch.setenv("HELLOLONDON_DIST_TIMEOUT_S", value)
    out = tmp_path / "runs"
    out.mkdir()
    argv = ["train", "--data", str(tokens), "--out-dir", str(out), "--gpus", "2", *TINY]
    err = _one_line_error(capsys, [*argv, "device=cpu"], out)
    assert f"HELLOLONDON_DIST_TIMEOUT_S={value!r} is not a number of seconds above 0" in err
    # a rank of a plain torchrun says the same, instead of a stack trace from the rendezvous
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(check_port(None))}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match="HELLOLONDON_DIST_TIMEOUT_S"):
        init_distributed("cpu")
    assert not dist.is_initialized()


def test_a_negative_gpu_count_names_what_the_launcher_takes(tokens, tmp_path, capsys):
    """The launcher takes --gpus 0 for the CPU, so its error must not say "at least 1"."""
    from hellolondon.cli import main

    argv = ["launch", "--yes", "--dry-run", "--fresh", "--data", str(tokens), "--gpus", "-1"]
    assert main([*argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --gpus must be 0 (the CPU) or more, not -1\n"


def test_ctrl_d_at_a_prompt_on_a_terminal_cancels(tmp_path, monkeypatch, capsys):
    """On a terminal, end of input is the user saying no, not a script that gave no answers."""
    from hellolondon.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("hellolondon.launch.gpu_names", lambda: [])
    monkeypatch.setattr("sys.stdin", Terminal(""))
    assert main(["launch", "--out-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "error: cancelled (Ctrl-D); nothing was started\n"
    assert list(tmp_path.iterdir()) == []


def test_launch_refuses_a_preset_beside_resume(tmp_path, capsys):
    from hellolondon.cli import main

    argv = ["launch", "--yes", "--dry-run", "--resume", str(tmp_path), "--preset", "slm"]
    assert main(argv) == 2
    assert "--preset slm does not apply with --resume" in capsys.readouterr().err


@pytest.mark.parametrize("under", ["", "/inside"])
def test_a_dry_run_refuses_a_sample_folder_that_is_a_file(under, tmp_path, capsys):
    from hellolondon.cli import main

    (tmp_path / "f").write_text("kept")
    argv = ["launch", "--yes", "--dry-run", "--fresh", "--data", "sample", "--wandb-mode",
            "disabled", "--out-dir", str(tmp_path / "runs"), "--sample-dir", f"{tmp_path}/f{under}"]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == (
        f"error: --sample-dir {tmp_path}/f{under} cannot hold the prepared sample ({tmp_path}/f is "
        "a file, not a folder); give a writable folder\n"
    )
    assert "$ hellolondon" not in out and (tmp_path / "f").read_text() == "kept"


def test_the_launcher_tells_a_terminals_ctrl_c_from_a_signal_sent_to_it(tmp_path):
    """In its terminal's foreground, a SIGINT reached torchrun too; elsewhere it did not."""
    import pexpect

    code = "from hellolondon.train.torchrun import _foreground; print(_foreground())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    detached = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, start_new_session=True, check=True)  # fmt: skip
    assert detached.stdout.strip() == "False"  # no terminal: an IDE, a scheduler
    at_terminal = pexpect.run(f"{sys.executable} -c '{code}'", env=env, encoding="utf-8")
    assert at_terminal.strip() == "True"
