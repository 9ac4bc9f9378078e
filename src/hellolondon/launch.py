"""`hellolondon launch`: a menu that asks what to train (run, preset, data, GPUs, W&B mode),
shows the exact `hellolondon train` command and runs it. Every question has a flag, so `--yes`
runs it without asking."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hellolondon.config import TrackingConfig
from hellolondon.errors import UserError
from hellolondon.prepare import is_prepared
from hellolondon.tracking.wandb_options import (
    Credentials,
    base_url,
    find_credentials,
    resolve_tracking,
)
from hellolondon.train.torchrun import check_gpus, gpu_names

SAMPLE = "sample"


@dataclass
class Choices:
    resume: str | None  # a run folder to continue, or None for a new run
    preset: str | None  # None when resuming: the checkpoint has its settings
    data: str | None  # SAMPLE, a prepared folder, or None: the resumed run's own
    gpus: int  # 0: the CPU
    wandb_mode: str


class Menu:
    """Numbered questions with a default on Enter. With `interactive=False` (the --yes mode)
    every question takes its default without asking."""

    def __init__(
        self,
        interactive: bool = True,
        ask: Callable[[str], str] = input,
        say: Callable[[str], None] = print,
    ) -> None:
        self.interactive, self.ask, self.say = interactive, ask, say

    def pick(self, title: str, options: list[tuple[str, str]], default: str) -> str:
        if not self.interactive:
            return default
        self.say(f"\n{title}")
        values = [value for value, _ in options]
        for i, (_, label) in enumerate(options, 1):
            self.say(f"  {i}) {label}")
        while True:
            answer = self._ask(f"choose 1-{len(options)} [{values.index(default) + 1}]: ")
            if not answer:
                return default
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return values[int(answer) - 1]
            self.say(f"  please answer with a number from 1 to {len(options)}")

    def number(self, title: str, low: int, high: int, default: int) -> int:
        if not self.interactive:
            return default
        while True:
            answer = self._ask(f"\n{title} ({low}-{high}) [{default}]: ")
            if not answer:
                return default
            if answer.isdigit() and low <= int(answer) <= high:
                return int(answer)
            self.say(f"  please answer with a number from {low} to {high}")

    def text(self, title: str) -> str:
        return self._ask(f"{title}: ")

    def confirm(self, title: str) -> bool:
        return not self.interactive or self._ask(f"\n{title} [Y/n]: ").lower() in ("", "y", "yes")

    def _ask(self, prompt: str) -> str:
        try:
            return self.ask(prompt).strip()
        except (EOFError, RuntimeError) as exc:  # RuntimeError: standard input is closed
            if isinstance(exc, RuntimeError) and sys.stdin is not None:
                raise
            if sys.stdin is not None and sys.stdin.isatty():  # Ctrl-D: the user said no
                cancelled = UserError("cancelled (Ctrl-D); nothing was started")
                cancelled.exit_code = 1
                raise cancelled from None
            raise UserError(
                "no answer on standard input; give the choices as flags and add --yes"
            ) from None


def resumable_runs(out_dir: Path, limit: int = 5) -> list[tuple[Path, str]]:
    """(run folder, newest checkpoint) of the runs under `out_dir`, newest first."""
    from hellolondon.rundir import runs_in
    from hellolondon.train.checkpoint import resolve

    found = []
    for run in runs_in(out_dir):
        with contextlib.suppress(UserError):
            found.append((run.path, resolve(run.path)))
    found.sort(key=lambda rs: rs[1].stat().st_mtime, reverse=True)
    return [(run, ckpt.name) for run, ckpt in found[:limit]]


def choose(args: argparse.Namespace, gpus: list[str], menu: Menu) -> Choices:
    """Every choice from its flag when given, else from the menu (or its default)."""
    from hellolondon.config import PRESETS

    out_dir = Path(args.out_dir)
    resume = args.resume
    if resume is None and not args.fresh:
        runs = resumable_runs(out_dir)
        options = [("", "a new run")] + [(str(r), f"resume {r} (from {step})") for r, step in runs]
        resume = (menu.pick("Run", options, "") or None) if runs else None
    if resume is not None and args.preset:  # as `train` says: a silently dropped flag misleads
        raise UserError(
            f"--preset {args.preset} does not apply with --resume: a run continues with its "
            "own settings; change one with key=value (train.max_iters=N)"
        )
    preset = None
    if resume is None:
        default = "tiny" if not gpus else "slm"
        options = [(name, f"{name:8s} {p.about}") for name, p in PRESETS.items()]
        preset = args.preset or menu.pick("Model preset", options, default)
    # a resumed run goes on with its own token files: another folder would be other data,
    # or another tokenizer that its checkpoint refuses
    data = args.data or (None if resume else _choose_data(menu, Path(args.sample_dir)))
    if data not in (None, SAMPLE) and not is_prepared(Path(data)):
        raise UserError(
            f"{data} is not a prepared folder (train.bin, val.bin, meta.json); run `hellolondon prepare` or use --data sample"
        )
    device = _device(resume, preset, args.overrides)  # a missing run or a bad setting: now
    if args.gpus is not None and args.gpus < 0:
        raise UserError(f"--gpus must be 0 (the CPU) or more, not {args.gpus}")
    if args.gpus == 0:  # the CPU, whatever GPUs there are (`train_command` says device=cpu)
        n = 0
    elif args.gpus is not None:
        check_gpus(args.gpus, device, 0 if device == "cpu" else len(gpus))  # as `train` would
        n = args.gpus
    elif device not in ("auto", "cuda"):  # the CPU, or one device named: one process
        n = 0 if device == "cpu" else 1
    elif len(gpus) > 1:
        n = menu.number("GPUs to use", 1, len(gpus), len(gpus))
    else:
        n = len(gpus)
    mode = args.wandb_mode or _ask_wandb_mode(menu, resumed=resume is not None)
    return Choices(resume=resume, preset=preset, data=data, gpus=n, wandb_mode=mode)


def _device(resume: str | None, preset: str | None, overrides: list[str]) -> str:
    """The run's `train.device`, resolved as `train` will resolve it: `--gpus N device=cpu`
    starts N CPU processes (gloo) whatever GPUs the machine has."""
    from hellolondon.config import build_config
    from hellolondon.train.run import config_for_resume

    if resume:
        return config_for_resume(str(resume), None, overrides).train.device
    return build_config(preset or "tiny", None, overrides).train.device


def _ask_wandb_mode(menu: Menu, resumed: bool = False) -> str:
    """The default is the mode `hellolondon train` would choose by itself: for a resumed run,
    its own ("": no flag, and a mode it was asked for stays), else WANDB_MODE, else online with
    a usable key (WANDB_API_KEY or a stored `wandb login`), else offline."""
    creds, problem = find_credentials(base_url())
    line = _key_state(creds, problem)
    default = resolve_tracking(TrackingConfig(), "tiny", "")  # the preset only names a tag
    if default.mode_reason == "WANDB_MODE":
        line += f"; WANDB_MODE={default.wandb_mode}"
    menu.say(f"\nWeights & Biases: {line}")
    options = [
        (
            "online",
            "online: live charts at wandb.ai"
            + ("" if creds else " (needs a key: falls back to offline)"),
        ),
        ("offline", "offline: logged here, upload later with `wandb sync`"),
        ("disabled", "disabled: only the local metrics log in the run folder"),
    ]
    if resumed:
        options.insert(0, ("", "as the run had it (a mode it was started with stays)"))
    return menu.pick("W&B mode", options, "" if resumed else default.wandb_mode)


def _key_state(creds: Credentials | None, problem: str | None) -> str:
    if problem:
        return problem
    if creds is None:
        return "WANDB_API_KEY is not set and no `wandb login` is stored"
    if creds.source == "wandb login":
        return "a key from `wandb login` is stored"
    return f"{creds.source} is set"


def _choose_data(menu: Menu, sample_dir: Path) -> str:
    ready = (
        " (prepared)"
        if is_prepared(sample_dir / "data")
        else f" (prepared into {sample_dir} first: some seconds)"
    )
    options = [
        (SAMPLE, "the bundled sample: Shakespeare's First Folio and the King James Bible" + ready)
    ]
    if is_prepared(Path("work/data")):
        options.append(("work/data", "work/data (prepared)"))
    options.append(("other", "another prepared folder (train.bin, val.bin, meta.json)"))
    default = options[-2][0] if len(options) > 2 else SAMPLE
    choice = menu.pick("Data", options, default)
    while choice == "other":
        folder = menu.text("prepared folder (Enter: back to the list)")
        if not folder:
            choice = menu.pick("Data", options, default)
        elif is_prepared(Path(folder)):
            return folder
        else:
            menu.say(f"  {folder} has no train.bin, val.bin and meta.json; try again")
    return choice


def train_command(ch: Choices, args: argparse.Namespace) -> list[str]:
    """The `hellolondon` arguments that do what was chosen."""
    data = str(Path(args.sample_dir) / "data") if ch.data == SAMPLE else ch.data
    cmd = ["train", *(["--resume", ch.resume] if ch.resume else ["--preset", ch.preset])]
    cmd += ["--data", data] if data else []
    cmd += [] if ch.resume else ["--out-dir", args.out_dir]  # a resumed run stays in its folder
    cmd += ["--wandb-mode", ch.wandb_mode] if ch.wandb_mode else []
    if ch.gpus > 1:
        cmd += ["--gpus", str(ch.gpus)]
    if args.gpus == 0:
        cmd += ["train.device=cpu"]
    return cmd + list(args.overrides)


def prepare_sample(work: Path, vocab_size: int = 8192) -> Path:
    """The bundled corpus as token files in `work/data` (once): documents, tokenizer, prepare."""
    from hellolondon.corpus.documents import read_documents
    from hellolondon.corpus.layout import CorpusFolder
    from hellolondon.corpus.sample import write_sample
    from hellolondon.prepare import prepare
    from hellolondon.tokenizer import train_tokenizer

    if is_prepared(work / "data"):
        return work / "data"
    corpus = CorpusFolder(work).documents
    write_sample(corpus)
    train_tokenizer(
        (d.text for d in read_documents(corpus)), work / "tokenizer", vocab_size=vocab_size
    )
    prepare(corpus, work / "tokenizer", work / "data", show_progress=True)
    return work / "data"


def _check_sample_dir(folder: Path) -> None:
    """The folder the sample is to be prepared in, checked before the command is shown."""
    from hellolondon.files import unwritable

    why = unwritable(folder)
    if why:
        raise UserError(
            f"--sample-dir {folder} cannot hold the prepared sample ({why}); give a writable folder"
        )


def launch(args: argparse.Namespace, menu: Menu | None = None) -> int:
    menu = menu or Menu(interactive=not args.yes)
    gpus = gpu_names()
    if gpus:
        menu.say(f"GPUs: {len(gpus)} ({', '.join(sorted(set(gpus)))})")
    else:
        menu.say("GPUs: none found (no CUDA)")
    ch = choose(args, gpus, menu)
    to_prepare = ch.data == SAMPLE and not is_prepared(Path(args.sample_dir) / "data")
    if to_prepare:
        _check_sample_dir(Path(args.sample_dir))
    cmd = train_command(ch, args)
    menu.say("")
    if to_prepare:
        menu.say(
            f"first: prepare the bundled sample into {args.sample_dir} (tokenizer and token files)"
        )
    else:
        from hellolondon.cli.train_command import check_only

        check_only(cmd[1:])  # what train would refuse at once: refused here, before it is shown
    menu.say("$ " + shlex.join(["hellolondon", *cmd]))
    if args.dry_run:
        return 0
    if not menu.confirm("Run it?"):
        menu.say("not started")
        return 0
    if ch.data == SAMPLE:
        prepare_sample(Path(args.sample_dir))
    from hellolondon.cli import main

    return main([*(["--debug"] if getattr(args, "debug", False) else []), *cmd])
