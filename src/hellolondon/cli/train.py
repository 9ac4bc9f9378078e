"""`hellolondon train`: train a GPT on prepared token files."""

from __future__ import annotations

import argparse

from hellolondon.config import PRESETS, build_config
from hellolondon.tracking.setup import add_tracking_flags, apply_tracking_flags
from hellolondon.train.torchrun import add_launch_flags

EXAMPLES = """examples:
  hellolondon train --preset tiny --data work/data
  hellolondon train --preset slm --data work/data --wandb-mode online
  hellolondon train --preset slm --config my.toml train.lr=3e-4 batch_size=16
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
        default="tiny",
        choices=list(PRESETS),
        help="model size and its training recipe (default: tiny)",
    )
    p.add_argument(
        "--config", help="a TOML file with [model], [train], [data], [tracking], [monitor] tables"
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
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config settings, applied last"
    )
    p.set_defaults(func=run, train_parser=p)


def config_from_args(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.data_dir={args.data}")
    if args.out_dir:
        overrides.append(f"out_dir={args.out_dir}")
    if args.resume:
        from hellolondon.train.run import config_for_resume

        return config_for_resume(args.resume, args.config, apply_tracking_flags(args, overrides))
    return build_config(args.preset, args.config, apply_tracking_flags(args, overrides))


def run(args: argparse.Namespace) -> int:
    from hellolondon.train.distributed import launched_rank, launched_world_size
    from hellolondon.train.loop import train
    from hellolondon.train.torchrun import apply_global_batch, check_gpus, gpu_names, launch_train

    cfg = config_from_args(args)
    launching = bool(args.gpus and args.gpus > 1)  # then rank 0 of the launched ones checks
    if (
        str(args.config or "").endswith(".json")
        and not args.resume
        and launched_rank() == 0
        and not launching
    ):
        from hellolondon.provenance import check_config_file  # a recorded run: what changed?

        check_config_file(args.config, cfg.data.data_dir)
    if args.gpus is not None:
        check_gpus(
            args.gpus, cfg.train.device, 0 if cfg.train.device == "cpu" else len(gpu_names())
        )
    if args.gpus and args.gpus > 1:  # this process starts torchrun, which starts the ranks
        apply_global_batch(cfg.train, args.global_batch, args.gpus)
        return launch_train(args, cfg, args.train_parser)
    apply_global_batch(cfg.train, args.global_batch, launched_world_size())
    summary = train(cfg, resume=args.resume)
    best = summary.get("best_val_loss")
    if launched_rank() == 0:
        print(
            f"done: {summary['iterations']} iterations"
            + (f", best val loss {best:.4f}" if best else "")
        )
    return 0
