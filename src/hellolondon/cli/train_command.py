"""`hellolondon train`: train a GPT on prepared token files."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import signal
import sys
from pathlib import Path

from hellolondon.cli.flags import add_launch_flags, add_tracking_flags, tracking_settings
from hellolondon.config import PRESETS, build_config
from hellolondon.errors import UserError

EXAMPLES = """examples:
  hellolondon train --preset tiny --data work/data
  hellolondon train --preset slm --data work/data --wandb-mode online
  hellolondon train --config my.toml train.lr=3e-4 batch_size=16
  hellolondon train --resume runs/london-slm-simple-20261126-101500
  hellolondon train --gpus 4 --preset slm --data work/data   # starts torchrun for you
  torchrun --nproc_per_node=8 -m hellolondon train --preset regular --data work/data

settings: any field of the config as key=value (train.lr=3e-4, or lr=3e-4 when the name is
unique); see `hellolondon config --preset slm` for every field and its value."""


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on prepared token files",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="model size and its training recipe (default: tiny)",
    )
    p.add_argument(
        "--config",
        help="a TOML file with [model], [train], [data], [tracking], [monitor] tables, or a run's "
        "saved config (a new run with its settings)",
    )
    p.add_argument(
        "--data", help="folder with train.bin, val.bin and meta.json (from `hellolondon prepare`)"
    )
    p.add_argument("--out-dir", help="folder that holds run folders (default: runs)")
    p.add_argument(
        "--resume",
        metavar="PATH",
        help="continue a run: its folder (newest good checkpoint) or a checkpoint folder",
    )
    add_tracking_flags(p)
    add_launch_flags(p)
    p.add_argument("--resolved-config", help=argparse.SUPPRESS)  # what `--gpus` hands each rank
    p.add_argument("--hashed-tokens", help=argparse.SUPPRESS)  # and rank 0 the data's hash
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config settings, applied last"
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, recorded=None):
    """The run's config from the command line; `recorded`: the content of `--config
    RUN/config.json` where it was read already (`_recorded_config`)."""
    if args.resolved_config:
        from hellolondon.config import from_dict

        return from_dict(json.loads(Path(args.resolved_config).read_text(encoding="utf-8")))
    _check_global_batch(args)
    flags = [f"data.data_dir={args.data}"] if args.data else []
    flags += [f"out_dir={args.out_dir}"] if args.out_dir else []
    overrides = [*flags, *tracking_settings(args), *args.overrides]  # settings last: they win
    if args.resume:
        from hellolondon.train.run import config_for_resume

        if args.preset:  # the run's own settings win; a silently ignored preset misleads
            raise UserError(
                f"--preset {args.preset} does not apply with --resume: a run continues with its "
                "own settings; change one with key=value (train.max_iters=N)"
            )
        _check_own_folder(args.resume, args.run_name, args.out_dir)
        return config_for_resume(args.resume, args.config, overrides)
    return build_config(
        args.preset or "tiny", args.config, overrides, preset_flag=args.preset, recorded=recorded
    )


def _recorded_config(args: argparse.Namespace):
    """`--config RUN/config.json` of a new run: that recorded run's config, read once for its
    settings, the check of what changed since and its global batch; None otherwise."""
    if args.resolved_config or args.resume or Path(args.config or "").suffix != ".json":
        return None
    from hellolondon.config import read_run_record

    return read_run_record(args.config)


def _go_on(args: argparse.Namespace, run: Path) -> str:
    """How a stopped run goes on: one process says the command; a rank that `train --gpus`
    started leaves it to that launcher, which knows the process count; a rank of a torchrun
    started by hand names the run for that same torchrun command."""
    from hellolondon.rundir import RunDir
    from hellolondon.tracking.wandb_tracker import resume_command, show_path

    if args.resolved_config:
        return ""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"; go on with the same torchrun command and --resume {shlex.quote(show_path(run))}"
    return f"; go on with: {resume_command(RunDir(run))}"


def sets_grad_accum(overrides: list[str]) -> list[str]:
    """The key=value settings among `overrides` that set train.grad_accum."""
    return [
        i for i in overrides if i.split("=", 1)[0].strip() in ("grad_accum", "train.grad_accum")
    ]


def _check_global_batch(args: argparse.Namespace) -> None:
    """--global-batch decides train.grad_accum (train.batch_size stays the most per process):
    a grad_accum given beside it would be silently replaced."""
    if args.global_batch is None:
        return
    if given := sets_grad_accum(args.overrides):
        raise UserError(
            f"{given[0]} does not apply with --global-batch {args.global_batch}, which splits "
            "the batch into train.batch_size (at most per process) x train.grad_accum x "
            "processes itself; give one or the other"
        )


def _check_own_folder(resume: str, run_name: str | None, out_dir: str | None) -> None:
    """--run-name and --out-dir place a new run folder; a checkpoint in its run's folder goes
    on there, so either would be ignored."""
    from hellolondon.rundir import RunDir
    from hellolondon.train.checkpoint import resolve

    home = RunDir.of_checkpoint(resolve(resume)) if run_name or out_dir else None
    if home is None:
        return
    wrong = []
    if run_name and home.path.name != run_name:
        wrong.append(f"--run-name {run_name}")
    if out_dir and Path(out_dir).resolve() != home.path.parent.resolve():
        wrong.append(f"--out-dir {out_dir}")
    if wrong:
        raise UserError(
            f"{' and '.join(wrong)} {'do' if len(wrong) > 1 else 'does'} not apply with --resume "
            f"{resume}: the run goes on in its own folder {home.path}; to start a new run from one "
            "of its checkpoints, copy that checkpoint folder out of the run and resume the copy"
        )


def _check_gpu_count(args: argparse.Namespace, cfg) -> None:
    """--gpus N against the GPUs this machine has (or CPU processes with device=cpu)."""
    from hellolondon.train.torchrun import check_gpus, gpu_names

    if args.gpus is not None:
        check_gpus(
            args.gpus, cfg.train.device, 0 if cfg.train.device == "cpu" else len(gpu_names())
        )


def check_only(argv: list[str]) -> None:
    """Refuse, as `hellolondon train ARGV` would before its first step, without training: the
    settings, the device, the process count and the global batch, the data, the run folder."""
    from hellolondon.cli import parse_command_line
    from hellolondon.hardware import resolve_device
    from hellolondon.train.torchrun import resolve_for

    args = parse_command_line(["train", *argv])
    cfg = config_from_args(args)
    _check_gpu_count(args, cfg)
    resolve_device(cfg.train.device)
    resolve_for(cfg, args.gpus or 1, args.resume, args.global_batch)


def _check_recorded_config(args: argparse.Namespace, recorded, cfg, is_main: bool):
    """A recorded run's config (`--config RUN/config.json`): say what changed since, and keep
    its global batch. Returns the token files' hash the check made (rank 0 and a launcher)."""
    if recorded is None:
        return None  # `--gpus` ranks get no --config: the launcher said it, once
    from hellolondon.provenance import (
        HashInBackground,
        check_before_training,
        recorded_global_batch,
    )

    hashing = None
    if is_main:
        hashing = HashInBackground(cfg.data.data_dir)
        check_before_training(recorded, cfg.data.data_dir, hashing=hashing)
    if args.global_batch is None and not sets_grad_accum(args.overrides):
        # a run of N processes: its global batch, on any number, as a resume keeps it
        say = print if is_main else (lambda *_: None)
        args.global_batch = recorded_global_batch(recorded, say)
    return hashing


def _launchers_hash(args: argparse.Namespace, cfg, is_main: bool):
    """Rank 0 of `train --gpus`: the hash its launcher made, while the files are as they were
    then (else rank 0 hashes them after all); None elsewhere."""
    if not (args.hashed_tokens and is_main):
        return None
    from hellolondon.files import read_json
    from hellolondon.provenance import HashInBackground

    return HashInBackground(cfg.data.data_dir, note=read_json(args.hashed_tokens))


def run(args: argparse.Namespace) -> int:
    from hellolondon.train.distributed import launched_rank
    from hellolondon.train.loop import train
    from hellolondon.train.torchrun import launch_train

    recorded = _recorded_config(args)
    cfg = config_from_args(args, recorded)
    is_main = launched_rank() == 0  # read now: a RANK that is not a number is refused up front
    # the token files' hash, made once per start: by the check of a recorded run's config
    # (handed on to rank 0 with --gpus), or by the launcher for rank 0, or else by rank 0 itself
    hashing = _check_recorded_config(args, recorded, cfg, is_main) or _launchers_hash(
        args, cfg, is_main
    )
    if args.master_port is not None and args.gpus is None:  # ignored, it would mislead
        raise UserError(
            f"--master-port {args.master_port} applies only with --gpus, which starts torchrun"
        )
    _check_gpu_count(args, cfg)
    if args.gpus:  # this process starts torchrun, which starts the ranks (one included)
        hashed = hashing.note() if hashing is not None else None
        return launch_train(
            cfg, args.gpus, args.resume, args.global_batch, args.master_port, args.debug, hashed
        )
    summary = train(cfg, resume=args.resume, global_batch=args.global_batch, hashing=hashing)
    # finished and saved: a scheduler's SIGTERM while the interpreter exits (which restores the
    # default, fatal action first) would turn a complete run into exit code 143. It is ignored
    # from the exit on, not from now: a caller of `main` that goes on keeps its own handler, and
    # so do the processes it starts (a pool's workers that ignore SIGTERM cannot be ended)
    atexit.register(signal.signal, signal.SIGTERM, signal.SIG_IGN)
    best = summary.get("best_val_loss")
    if is_main:
        best_text = f", best val loss {best:.4f}" if best else ""
        if summary.get("stop_reason") == "stopped by a signal":
            # exit 0 all the same: the stop was asked for and its checkpoint is saved
            print(f"stopped at iteration {summary['iterations']} of {cfg.train.max_iters}"
                  f"{best_text}{_go_on(args, Path(summary['run_dir']))}")  # fmt: skip
        elif summary.get("stop_reason") != "non-finite loss":  # that one: the error below
            print(f"done: {summary['iterations']} iterations{best_text}")
    if summary.get("stop_reason") == "non-finite loss":
        print(
            "error: training stopped on a non-finite loss (train.nonfinite=stop); the last "
            "checkpoint holds the weights from before it",
            file=sys.stderr,
        )
        return 3
    return 0
