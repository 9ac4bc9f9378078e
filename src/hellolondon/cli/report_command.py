"""`hellolondon report`: the training report of one or more runs as a PNG and an offline HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  hellolondon report runs/london-tiny-demo-20261126-101500
  hellolondon report runs/london-slm-simple-A runs/london-slm-simple-B --out compare/

It reads the metrics, events and summary in each run folder (no W&B needed) and writes
report.png and report.html: the panels train/loss, train/mfu, train/lr, train/iter, train/dt_ms,
the eval curves, GPU memory, throughput and gradient norm, runs overlaid, the health findings and
a summary table. The HTML page works offline: hover for values, drag to zoom, click to hide runs."""


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="charts of one or more runs as a PNG and an offline HTML page",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", type=Path, help="run folder(s) to compare")
    p.add_argument("--out", help="folder for the report (default: <first run>/report)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.report import write_report
    from hellolondon.rundir import RunDir

    out = Path(args.out) if args.out is not None else RunDir(args.runs[0]).report_dir
    paths = write_report(args.runs, out)
    print(f"wrote {paths['png']}")
    print(f"wrote {paths['html']}  (open it in a browser; it needs no network)")
    return 0
