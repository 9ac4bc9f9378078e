"""`hellolondon compare`: runs side by side, the settings that differ and what each achieved."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = """examples:
  hellolondon compare runs/london-tiny-demo-A runs/london-tiny-demo-B
  hellolondon compare runs/sweep-lr/trials/* --sort tokens/s
  hellolondon compare runs/A runs/B --json > compare.json

Columns: the settings that differ between the runs, then status, best and final val loss,
best val bits per byte (when `hellolondon eval` logged it), steps and tokens to the best val loss,
tokens/s, MFU, wall time and the health findings. Rows are best first by the sorted column
(lower losses and times, higher throughput); the default sort is best val loss."""


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="runs side by side: differing settings and outcomes",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", type=Path, help="run folders")
    p.add_argument("--sort", metavar="COLUMN", help="column to sort by (default: best val loss)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from hellolondon.comparison import compare
    from hellolondon.report.rundata import load_runs

    runs, notes = load_runs(args.runs)
    table = compare(runs, sort=args.sort)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(table.to_json(), indent=1, allow_nan=False, default=str))
    else:
        print(table.text())
    return 0
