"""`hellolondon sweep`: a W&B sweep file run offline, on W&B's own sweep engine."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  hellolondon sweep sweeps/tiny_lr.yaml --trials 4
  hellolondon sweep sweeps/slm_lr_warmup.yaml --trials 20 --out-dir runs/sweep-slm
  hellolondon sweep sweeps/tiny_lr.yaml --trials 4     # again: resumes where it stopped

The file is the one `wandb sweep` takes (method grid, random or bayes; parameters named by
their setting, such as train.lr; a metric; optionally early_terminate: hyperband). Each trial
is an ordinary run folder under <folder>/trials/, trained by `hellolondon train` in its own
process and grouped under the sweep's name. Killed midway, the same command resumes: finished
trials are kept, the one that was running continues from its checkpoint. At the end the ranked
table is printed and written to <folder>/ranking.txt (and ranking.json).

Needs W&B's engine: pip install 'hellolondon[sweep]' && pip install --no-deps sweeps==0.3.0"""


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a W&B sweep file offline: each trial a training run",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", metavar="SWEEP.yaml", type=Path, help="the sweep file")
    p.add_argument("--trials", type=int, metavar="N", help="trials in all (a grid ends by itself)")
    p.add_argument(
        "--out-dir",
        help="the sweep folder (default: OUT/sweep-<name>, OUT being the out_dir of the sweep's command: runs unless it sets one)",
    )
    p.add_argument("--check", action="store_true", help="only check the sweep file; start nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.search.driver import run_sweep
    from hellolondon.search.space import load_spec

    if args.check:
        spec = load_spec(args.spec)
        print(f"{args.spec}: valid {spec.method} sweep over {', '.join(spec.params)}")
        return 0
    try:
        run_sweep(args.spec, trials=args.trials, out_dir=args.out_dir)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after the running trial saved (as `train`)
        print("sweep stopped; the same command goes on where it stopped")
    return 0
