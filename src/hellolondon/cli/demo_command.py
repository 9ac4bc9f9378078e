"""`hellolondon demo`: the whole path offline on the bundled corpus, in minutes on a CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from hellolondon.cli.flags import add_tracking_flags, tracking_settings

EXAMPLES = """examples:
  hellolondon demo                          # work/demo for data, runs/ for the run
  hellolondon demo --work /tmp/demo train.max_iters=100
  hellolondon demo --wandb-mode disabled    # no W&B run at all (the local metrics log is still written)"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: sample corpus -> tokenizer -> tiny GPT -> text -> report",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--work",
        default="work/demo",
        help="folder for the corpus, tokenizer and token files, replaced on every run (a folder "
        "holding other files is refused; default work/demo)",
    )
    p.add_argument(
        "--out-dir", default="runs", help="folder that holds run folders (default: runs)"
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=8192,
        help="the demo's tokenizer size (default: 8192; `tokenizer train` defaults to 30,000)",
    )
    add_tracking_flags(p)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config settings for the training run"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.demo import claim_work, demo_config, run_demo

    tracking = tracking_settings(args)  # without an API key W&B records offline
    work, overrides = Path(args.work), [f"out_dir={args.out_dir}", *args.overrides]
    cfg = demo_config(work, overrides, tracking, args.vocab_size)  # checked before any write
    claim_work(work, args.out_dir)
    run_demo(work, cfg, args.vocab_size)
    return 0
