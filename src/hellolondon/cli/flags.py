"""The flags that several commands share, declared once so they read and behave the same."""

from __future__ import annotations

import argparse

from hellolondon.errors import UserError

TRACKING_FLAGS = {  # flag dest -> config key
    "wandb_mode": "tracking.wandb_mode",
    "wandb_project": "tracking.project",
    "wandb_entity": "tracking.entity",
    "run_name": "tracking.run_name",
    "tags": "tracking.tags",
    "notes": "tracking.notes",
    "group": "tracking.group",
}


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "tracking (Weights & Biases beside the run folder's own metrics log, which is always written)"
    )
    g.add_argument(
        "--wandb-mode",
        choices=["online", "offline", "disabled"],
        help=(
            "default: WANDB_MODE, else the mode `wandb offline` (or online, disabled) saved, "
            "else online when an API key is set and offline without"
        ),
    )
    g.add_argument(
        "--wandb-project", metavar="NAME", help="default: WANDB_PROJECT, else helloLondon"
    )
    g.add_argument("--wandb-entity", metavar="NAME", help="user or team; default: WANDB_ENTITY")
    g.add_argument(
        "--run-name",
        metavar="NAME",
        help="default: WANDB_NAME, else london-<kind>-YYYYMMDD-HHMMSS (the preset's prefix)",
    )
    g.add_argument(
        "--tags",
        metavar="A,B",
        help="extra tags besides london,historical,llm,gpt2,1500-1850, the preset and WANDB_TAGS",
    )
    g.add_argument(
        "--notes", metavar="TEXT", help="free text shown on the W&B run; default: WANDB_NOTES"
    )
    g.add_argument(
        "--group",
        metavar="NAME",
        help="W&B group that gathers related runs; default: WANDB_RUN_GROUP",
    )
    g.add_argument(
        "--log-artifacts",
        action="store_true",
        default=None,
        help="upload each checkpoint as a W&B model Artifact (aliases latest and best)",
    )


def tracking_settings(args: argparse.Namespace) -> list[str]:
    """The tracking flags that were given, as `key=value` settings. Commands put them before
    the command line's own settings, which are applied last and so win over a flag."""
    given = {d: getattr(args, d) for d in TRACKING_FLAGS if getattr(args, d, None) is not None}
    for dest, value in given.items():
        if isinstance(value, str) and not value.strip():  # it would read as "not given"
            flag = "--" + dest.replace("_", "-")
            raise UserError(f"{flag} is blank; give a value, or leave {flag} out for the default")
    settings = [f"{TRACKING_FLAGS[dest]}={value}" for dest, value in given.items()]
    if getattr(args, "log_artifacts", None):
        settings.append("tracking.log_artifacts=true")
    return settings


def add_launch_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "several GPUs on this machine (see docs/distributed.md for more nodes)"
    )
    g.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="start N processes with torchrun, one per GPU "
        "(add device=cpu to try it on CPU processes with gloo)",
    )
    g.add_argument(
        "--master-port",
        type=int,
        metavar="PORT",
        help="rendezvous port for --gpus (default: a free one)",
    )
    g.add_argument(
        "--global-batch",
        type=int,
        metavar="SEQS",
        help="sequences per optimizer step over all "
        "processes; sets batch_size and grad_accum for the world size (which must divide it)",
    )


# the path flags of every command, by their attribute: a blank one is refused before any command
PATH_DESTS = frozenset(
    {"out", "out_dir", "data", "corpus", "tokenizer", "sample_dir", "resume", "config", "probes",
     "work", "documents", "catalog", "input", "extra", "profile"}
)  # fmt: skip


def refuse_blank_paths(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a path flag given as a blank string: an empty path means the current folder (to
    write token files, a report or an export into it) or reads as the flag's absence (its
    default). A repeatable flag is checked item by item."""
    for action in command._actions:
        if action.dest not in PATH_DESTS or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not item.strip():
                flag = action.option_strings[-1]
                default = "" if action.required else f", or leave {flag} out for the default"
                raise UserError(f"{flag} is blank; give a path{default}")
