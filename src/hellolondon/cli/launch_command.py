"""`hellolondon launch`: an interactive menu that builds the training command, shows it and
runs it. Every question also has a flag, so `--yes` runs it without asking."""

from __future__ import annotations

import argparse

from hellolondon.config import PRESETS

EXAMPLES = """examples:
  hellolondon launch                     # asks: run, preset, data, GPUs, W&B mode; then confirms
  hellolondon launch --yes --preset slm --data work/data --gpus 4 --wandb-mode online
  hellolondon launch --yes --data sample --dry-run          # only print the command
  hellolondon launch --resume runs/london-slm-simple-20261126-101500 --yes

questions and their flags: new run or resume (--fresh / --resume RUN), preset (--preset),
data (--data sample|FOLDER), GPUs (--gpus N, 0 for the CPU), W&B mode (--wandb-mode);
anything after the flags (key=value) is passed to `hellolondon train`."""


def register(sub) -> None:
    p = sub.add_parser(
        "launch",
        help="interactive launcher: choose what to train, see the command, run it",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", choices=list(PRESETS), help="model size (default: tiny on CPU, slm on GPUs)"
    )
    p.add_argument(
        "--data", metavar="sample|FOLDER", help="the bundled sample corpus or a prepared folder"
    )
    p.add_argument(
        "--gpus", type=int, metavar="N", help="GPUs to use (default: all; 0 or none found: the CPU)"
    )
    p.add_argument(
        "--wandb-mode",
        choices=["online", "offline", "disabled"],
        help=(
            "default: WANDB_MODE, else the mode `wandb offline` (or online, disabled) saved, "
            "else online with a key (WANDB_API_KEY or `wandb login`), else offline"
        ),
    )
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", metavar="RUN", help="continue this run folder")
    run.add_argument(
        "--fresh", action="store_true", help="start a new run without asking about old ones"
    )
    p.add_argument(
        "--out-dir", default="runs", help="folder that holds run folders (default: runs)"
    )
    p.add_argument(
        "--sample-dir",
        default="work/sample",
        help="where the bundled sample is prepared (default: work/sample)",
    )
    p.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="ask nothing: defaults for what no flag gives, and run",
    )
    p.add_argument("--dry-run", action="store_true", help="print the command and stop")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="settings passed on to `hellolondon train`",
    )
    p.set_defaults(func=run_launch)


def run_launch(args: argparse.Namespace) -> int:
    from hellolondon.launch import launch

    return launch(args)
