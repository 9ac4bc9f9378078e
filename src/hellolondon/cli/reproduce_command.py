"""`hellolondon reproduce`: run a recorded run again, after naming what changed since."""

from __future__ import annotations

import argparse
from pathlib import Path

from hellolondon.cli.flags import add_tracking_flags, tracking_settings

EXAMPLES = """examples:
  hellolondon reproduce runs/london-tiny-demo-20261126-101500
  hellolondon reproduce runs/london-slm-simple-A --data /data/london --check
  hellolondon reproduce runs/london-slm-simple-A --strict train.max_iters=4000

It starts a new run (a new name) with the recorded settings. Before the first step it compares
the code (package version, git commit, uncommitted changes), the packages (Python, PyTorch,
CUDA, cuDNN, NCCL, NumPy, tokenizers, wandb) and the data (the token files, hashed as they are
now, and the tokenizer) with what the run recorded, and warns about each difference.
`hellolondon train --config` with a run's saved config runs the same check."""


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run a recorded run again, warning about changed code, packages or data",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", type=Path, help="the run folder to reproduce")
    p.add_argument("--data", help="the prepared data folder, when it has moved since the run")
    p.add_argument(
        "--out-dir",
        help="folder for the new run folder (default: the one that holds RUN; for a sweep's "
        "trial, the one that holds the sweep)",
    )
    p.add_argument(
        "--check", action="store_true", help="only compare with the recorded run; train nothing"
    )
    p.add_argument("--strict", action="store_true", help="refuse to start when anything differs")
    add_tracking_flags(p)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="settings to change, applied last"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.cli.train_command import sets_grad_accum
    from hellolondon.config import build_config, settings_of_run
    from hellolondon.errors import UserError
    from hellolondon.provenance import (
        HashInBackground,
        check_before_training,
        recorded_data_dir,
        recorded_global_batch,
    )
    from hellolondon.report.rundata import load_run
    from hellolondon.rundir import RunDir
    from hellolondon.search.folder import SweepFolder

    recorded = load_run(args.run).config
    if not recorded:
        run = RunDir(args.run)
        raise UserError(
            f"{run.config_file} {run.config_problem() or 'is empty'}: the recorded settings are "
            "not there to run again"
        )
    # the recorded paths may be relative to the folder the run was started in, not to this one
    data = args.data or recorded_data_dir(recorded)
    if not args.data and data and not Path(data).exists():
        raise UserError(
            f"the data folder {args.run} trained on, {data}, is not there any more (moved or "
            "deleted); give where it is now with --data DIR"
        )
    overrides = [f"data.data_dir={data}"] if data else []
    sweep = SweepFolder.of_trial(args.run)
    # a sweep's trial is run again beside its sweep, not as one more trial inside it
    where = args.out_dir or (sweep.path.parent if sweep is not None else args.run.parent)
    overrides += [f"out_dir={where}"]
    overrides += ["tracking.group="] if sweep is not None else []
    overrides += tracking_settings(args)
    base = settings_of_run(recorded, str(args.run))
    cfg = build_config(base=base, overrides=[*overrides, *args.overrides])  # settings last
    # the token files are read once: compared with the record here, recorded by the new run
    hashing = HashInBackground(cfg.data.data_dir)
    check_before_training(recorded, cfg.data.data_dir, strict=args.strict, hashing=hashing)
    if args.check:
        return 0
    from hellolondon.train.loop import train

    keep = None if sets_grad_accum(args.overrides) else recorded_global_batch(recorded)
    summary = train(cfg, global_batch=keep, hashing=hashing)
    best = summary.get("best_val_loss")
    print(
        f"done: {summary['iterations']} iterations"
        + (f", best val loss {best:.4f}" if best else "")
    )
    return 0
