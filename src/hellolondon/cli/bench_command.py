"""`hellolondon bench`: time training steps of a preset on random tokens."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hellolondon.config import PRESETS, build_config
from hellolondon.errors import UserError

EXAMPLES = """examples:
  hellolondon bench --preset slm --batch-size 32            # nanoGPT's GPT-2 small setting
  hellolondon bench --preset regular --batch-size 16 --steps 30
  hellolondon bench --preset tiny --device cpu --compile false
  hellolondon bench --preset slm --json                     # one JSON line, for scripts
  hellolondon bench --preset slm --repeat 5                 # median of 5 timings, and the spread
  hellolondon bench --preset slm --profile prof/            # where a step's time goes
  hellolondon bench --preset slm train.dtype=bfloat16 model.block_size=512 train.compile=false

key=value settings are those of `hellolondon train` (see `hellolondon config`), applied after
the flags, so they win over them.

MFU uses the detected GPU's bf16 peak, or HELLOLONDON_PEAK_TFLOPS (which also gives one on a CPU)."""


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time training steps on random tokens (ms/iter, tokens/s, MFU)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", default="slm", choices=list(PRESETS), help="model shape (default: slm)"
    )
    p.add_argument("--batch-size", type=int, help="sequences per step (default: the preset's)")
    p.add_argument(
        "--grad-accum", type=int, default=1, help="micro-steps per step (default 1, any preset)"
    )
    p.add_argument("--block-size", type=int, help="sequence length (default: the preset's)")
    p.add_argument("--vocab-size", type=int, default=30000, help="(default: 30000)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    p.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="untimed steps first, compilation included; the first step always runs untimed, "
        "as it gives the first-step time (default: 5)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="time the steps N times; the median is reported, and each window for the spread",
    )  # fmt: skip
    p.add_argument(
        "--profile", metavar="DIR",
        help="also profile 3 steps: print where the time goes, write DIR/trace.json",
    )  # fmt: skip
    p.add_argument(
        "--compile",
        choices=["auto", "true", "false"],
        default="auto",
        help="(default: auto: on a GPU)",
    )
    p.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
        help="(default: auto: bf16 where the GPU has it, else fp16; fp32 on a CPU)",
    )  # fmt: skip
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of lines (notes and warnings: stderr)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="more settings, e.g. train.attention=flash train.compile_mode=max-autotune",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.bench import bench
    from hellolondon.step_profile import format_summary

    over = [
        f"model.vocab_size={args.vocab_size}",
        f"train.grad_accum={args.grad_accum}",
        f"train.compile={args.compile}",
        f"train.dtype={args.dtype}",
        f"train.device={args.device}",
    ]
    if args.batch_size is not None:  # 0 is refused by the config, not read as "the preset's"
        over.append(f"train.batch_size={args.batch_size}")
    if args.block_size is not None:
        over.append(f"model.block_size={args.block_size}")
    cfg = build_config(args.preset, overrides=over + list(args.overrides))
    if args.steps < 1 or args.repeat < 1 or args.warmup < 0:
        raise UserError(
            f"--steps ({args.steps}) and --repeat ({args.repeat}) must be at least 1, --warmup "
            f"({args.warmup}) at least 0"
        )
    profile = Path(args.profile) if args.profile is not None else None
    if profile is not None:
        _check_profile_folder(profile)
    r = bench(
        cfg, steps=args.steps, warmup=args.warmup, repeat=args.repeat, profile=profile,
        log=_to_stderr if args.json else print,
    )  # fmt: skip
    if args.json:
        print(json.dumps(r))
        return 0
    mfu = (
        f"{r['mfu_percent']:.1f}%"
        if r["mfu_percent"] is not None
        else "n/a (no peak FLOPS known for this device)"
    )
    mem = f"{r['peak_memory_gb']:.2f} GB" if r["peak_memory_gb"] is not None else "n/a"
    print(
        f"{args.preset} on {r['device']} ({r['dtype']}, compile {r['compile']}), batch {r['batch_size']}x{r['block_size']}"
    )
    print(
        f"  {r['ms_per_iter']:.1f} ms/iter  {r['tokens_per_sec']:,.0f} tokens/s  MFU {mfu}  peak memory {mem}"
    )
    if len(r["ms_per_iter_windows"]) > 1:
        w = r["ms_per_iter_windows"]
        print(
            f"  median of {len(w)} timings of {args.steps} steps: {min(w):.1f}-{max(w):.1f} ms/iter"
        )
    compiled = " (compilation included)" if r["compiled"] else ""
    print(f"  first step {r['first_step_s']:.1f} s{compiled}")
    if "profile" in r:
        for line in format_summary(r["profile"]):
            print(line)
        print(f"  trace: {r['profile']['trace']}")
    return 0


def _to_stderr(line: str) -> None:
    """Under --json the notes and warnings go to stderr, so stdout is the JSON object alone."""
    print(line, file=sys.stderr)


def _check_profile_folder(folder: Path) -> None:
    """Before the bench (minutes of compilation on a GPU): a folder trace.json can be written to."""
    from hellolondon.files import check_writable_folder

    if folder.exists() and not folder.is_dir():
        raise UserError(f"--profile {folder} is a file; give a folder for trace.json")
    check_writable_folder(folder, "--profile", "give a writable folder for trace.json")
