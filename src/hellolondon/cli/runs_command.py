"""`hellolondon runs`: the local runs, how far each got, and which still wait for `wandb sync`."""

from __future__ import annotations

import argparse
from pathlib import Path

from hellolondon.errors import UserError

EXAMPLES = """examples:
  hellolondon runs                     # the runs below ./runs, and their sweeps' trials
  hellolondon runs /data/runs          # or: --out-dir /data/runs
  hellolondon runs --json              # the same as JSON, for scripts

W&B column: online, offline or disabled (how the run was tracked); SYNC "needed" means W&B's
copy is on this machine only: run the `wandb sync ...` command printed below the table."""


def register(sub) -> None:
    p = sub.add_parser(
        "runs",
        help="list local runs: preset, iterations, best val loss, W&B mode, sync state",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "folder", nargs="?", metavar="FOLDER", help="folder that holds run folders (default: runs)"
    )
    p.add_argument("--out-dir", help="the same as FOLDER")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from hellolondon.rundir import RunDir
    from hellolondon.tracking.run_list import format_runs, list_runs, runs_json

    if args.folder and args.out_dir and Path(args.folder) != Path(args.out_dir):
        raise UserError(f"give the folder once: {args.folder} or --out-dir {args.out_dir}")
    root = Path(args.folder or args.out_dir or "runs")
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file, not a folder of runs; give the folder of your runs")
    if not root.is_dir():
        raise UserError(
            f"no run folder {root}/; train a model first (hellolondon train) or give the folder of your runs"
        )
    if RunDir.is_run(root):
        raise UserError(
            f"{root} is a run folder, not a folder of runs; use `hellolondon runs {root.parent}`"
        )
    runs = list_runs(root)
    if args.json:
        print(runs_json(runs))
    elif not runs:
        print(f"no runs in {root}/ yet; start one with: hellolondon train --preset tiny")
    else:
        print(format_runs(runs))
    return 0
