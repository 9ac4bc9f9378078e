"""`hellolondon train`: train a GPT on prepared token files."""

from __future__ import annotations

import argparse

from hellolondon.config import PRESETS, build_config

EXAMPLES = """examples:
  hellolondon train --preset tiny --data work/data
  hellolondon train --preset slm --data work/data --wandb-mode online
  hellolondon train --preset slm --config my.toml train.lr=3e-4 batch_size=16
  hellolondon train --resume runs/london-slm-simple-20261126-101500
  torchrun --nproc_per_node=8 -m hellolondon train --preset regular --data work/data

settings: any field of the config as key=value (train.lr=3e-4, or lr=3e-4 when the name is
unique); see `hellolondon config --preset slm` for every field and its value."""


def add_tracking_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking (Weights & Biases; the local metrics.jsonl is always written)")
    g.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], help="default: WANDB_MODE, else online with an API key and offline without")
    g.add_argument("--wandb-project", help="default: WANDB_PROJECT, else helloLondon")
    g.add_argument("--wandb-entity", help="user or team; default: WANDB_ENTITY")
    g.add_argument("--run-name", help="default: london-<kind>-YYYYMMDD-HHMMSS as the seed names runs")
    g.add_argument("--tags", help="extra comma-separated tags besides london,historical,llm,gpt2,1500-1850")
    g.add_argument("--notes", help="free text shown on the W&B run")
    g.add_argument("--group", help="W&B group for related runs")


def tracking_overrides(args: argparse.Namespace) -> list[str]:
    pairs = {"wandb_mode": args.wandb_mode, "project": args.wandb_project, "entity": args.wandb_entity,
             "run_name": args.run_name, "tags": args.tags, "notes": args.notes, "group": args.group}
    return [f"tracking.{k}={v}" for k, v in pairs.items() if v is not None]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on prepared token files", description=__doc__,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model size and its training recipe (default: tiny)")
    p.add_argument("--config", help="a TOML file with [model], [train], [data], [tracking], [monitor] tables")
    p.add_argument("--data", help="folder with train.bin, val.bin and meta.json (from `hellolondon prepare`)")
    p.add_argument("--out-dir", help="folder that holds run folders (default: runs)")
    p.add_argument("--resume", metavar="PATH", help="continue a run: its folder (newest good checkpoint) or a checkpoint folder")
    add_tracking_flags(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config settings, applied last")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.data_dir={args.data}")
    if args.out_dir:
        overrides.append(f"out_dir={args.out_dir}")
    return build_config(args.preset, args.config, overrides + tracking_overrides(args))


def run(args: argparse.Namespace) -> int:
    from hellolondon.train.loop import train

    summary = train(config_from_args(args), resume=args.resume)
    best = summary.get("best_val_loss")
    print(f"done: {summary['iterations']} iterations" + (f", best val loss {best:.4f}" if best else ""))
    return 0
