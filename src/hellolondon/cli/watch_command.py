"""`hellolondon watch`: follow a training run in the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  hellolondon watch runs/london-slm-simple-20261126-101500
  hellolondon watch runs                 # the newest run in runs/
  hellolondon watch runs/RUN --once      # one frame, then exit: for pipes and scripts
  hellolondon watch runs/RUN --interval 2

Shows the latest train/loss, train/mfu, train/lr, train/dt_ms, eval losses, throughput and GPU
memory with sparklines, the progress and ETA, and the health findings. It stops when the run
finishes (its summary is written), on Ctrl-C, or, with exit code 1 and how to go on, when the
run's training process on this machine is gone without finishing (killed, or dead of an error)."""


def register(sub) -> None:
    p = sub.add_parser(
        "watch",
        help="follow a training run in the terminal (values, sparklines, findings)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder, or a folder of runs")
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between refreshes (default 5)"
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="print one frame and exit (code 1 where the run's process is gone)",
    )
    p.add_argument("--width", type=int, help="characters per line (default: the terminal's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.errors import UserError
    from hellolondon.watch import MIN_WIDTH, watch

    if not 0 < args.interval <= 86400:  # nan and inf too: the first sleep would fail on them
        raise UserError("--interval must be a number of seconds above 0 and at most a day")
    if args.width is not None and args.width < MIN_WIDTH:
        raise UserError(
            f"--width {args.width} is too narrow for the charts; give {MIN_WIDTH} or more"
        )
    return watch(args.run, interval=args.interval, once=args.once, width=args.width)
