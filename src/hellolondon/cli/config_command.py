"""`hellolondon config`: show the resolved settings of a preset, file and overrides."""

from __future__ import annotations

import argparse
import dataclasses
import json

from hellolondon.config import PRESETS, SECTIONS, build_config

EXAMPLES = """examples:
  hellolondon config --preset slm
  hellolondon config --preset regular train.lr=2e-4 > my.toml   # a starting point to edit
  hellolondon train --config my.toml --data work/data"""


def register(sub) -> None:
    p = sub.add_parser(
        "config",
        help="print every setting of a preset (with a file and overrides) as TOML",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=list(PRESETS), help="default: tiny, or the file's")
    p.add_argument("--config", help="a TOML file applied on top of the preset")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="settings to change (train.lr=3e-4), applied last",
    )
    p.set_defaults(func=run)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):  # JSON's escapes are TOML's; TOML also wants DEL escaped
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _header(cfg) -> str:
    """The preset's description, or what the shape changes of it: its own words about sizes
    would be wrong over other ones."""
    preset = PRESETS[cfg.preset]
    shape = ("n_layer", "n_head", "n_embd", "block_size")
    changed = [
        f"{k} {getattr(cfg.model, k)}"
        for k in shape
        if getattr(cfg.model, k) != getattr(preset.model, k)
    ]
    if not changed:
        return f"# preset {cfg.preset}: {preset.about}"
    return f"# from preset {cfg.preset}, with another shape: {', '.join(changed)}"


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args.preset or "tiny", args.config, args.overrides, preset_flag=args.preset)
    print(_header(cfg))
    print(f"preset = {_toml_value(cfg.preset)}")
    print(f"out_dir = {_toml_value(cfg.out_dir)}")
    for section in SECTIONS:
        print(f"\n[{section}]")
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            print(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return 0
