"""The `hellolondon` command. Thin: each module in this package registers its subcommands and
calls the stage functions; errors the user can fix become one line and a non-zero exit."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import os
import pkgutil
import re
import select
import signal
import sys
import threading
import time
from pathlib import Path

from hellolondon import __version__
from hellolondon.cli.flags import refuse_blank_paths
from hellolondon.errors import Terminated, UserError

# How long a rank other than its machine's first gives that rank to print a shared error (below).
ECHO_WAIT_S = 5.0


class _Parser(argparse.ArgumentParser):
    """argparse's parser (its subcommands' too), whose usage errors are said once under torchrun."""

    def error(self, message: str):
        _let_local_rank0_say_it()
        super().error(message)


def _let_local_rank0_say_it() -> None:
    """Under torchrun every rank of a machine meets a bad setting, a missing folder or an
    unknown flag at the same moment, and each would print the same line. A rank other than the
    machine's first waits a little instead: that rank prints the line and exits, and torchrun
    then ends this one (SIGTERM, its default action now). A rank still here after the wait has
    an error of its own (a GPU it lacks, say), and prints it."""
    local = os.environ.get("LOCAL_RANK", "0")
    if "TORCHELASTIC_RUN_ID" not in os.environ or local in ("", "0"):
        return
    with contextlib.suppress(ValueError):  # only the main thread sets handlers
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(ECHO_WAIT_S)


def _from_rank() -> str:
    """ "rank N: " before the error lines of a rank other than 0 under torchrun, whose lines
    mingle with the others' in one console; "" otherwise."""
    rank = os.environ.get("RANK", "")
    return f"rank {rank}: " if "TORCHELASTIC_RUN_ID" in os.environ and rank not in ("", "0") else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hellolondon",
        description="Build a historical-English (London 1500-1850) language model and watch it learn.",
        epilog="Start with: hellolondon demo   (offline, a few minutes on a laptop CPU)",
    )
    parser.add_argument("--version", action="version", version=f"hellolondon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each module hellolondon/cli/<group>_command.py with a `register(sub)` adds its own subcommands.
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's --help opens with a line of what it does: its own description, or
    the one-line help its parent lists it with."""
    action = _subparsers(parser)
    if action is None:
        return
    helps = {a.dest: a.help for a in action._choices_actions}
    for name, child in action.choices.items():
        if not child.description and helps.get(name):
            child.description = f"`{child.prog}`: {helps[name]}."
        _describe(child)


def _line_buffered() -> None:
    """Every console line reaches a pipe (`hellolondon train ... | tee log`) as it is printed:
    Python holds back what it writes to a pipe or file until a block is full."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if not stream.isatty():
                stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError, OSError):  # replaced or closed streams: leave them
            pass


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse takes `key=value` settings only where they first appear: those after a later
    flag (`reproduce RUN --check train.lr=1e-3`, `train lr=1e-3 --data d seed=2`) come back
    unparsed. They are settings like the rest, so they join them, in command-line order."""
    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides") and all(_is_setting(a) for a in rest):
        args.overrides = [*args.overrides, *rest]
    elif rest:  # said by the command's own parser: its usage shows what it does take
        command = _chosen(parser, args)
        if hasattr(args, "overrides"):  # settings are fine there: only the flags are at fault
            rest = [a for a in rest if not _is_setting(a)]
        hint = _hint(command, [a for a in rest if a.startswith("-")], argv, args)
        command.error(f"unrecognized arguments: {' '.join(rest)}{hint} (see --help)")
    return args


def _hint(command: argparse.ArgumentParser, flags: list[str], argv: list[str], args) -> str:
    """What an unknown flag most likely meant: a flag of the command spelt differently
    (`--max_new_tokens`), or a setting (`--max-iters 2` is `train.max_iters=2`)."""
    known = [o for action in command._actions for o in action.option_strings]
    for flag in flags:
        name = flag.split("=", 1)[0].replace("_", "-")
        if close := difflib.get_close_matches(name, known, n=1, cutoff=0.8):
            return f"; did you mean {close[0]}?"
    if hasattr(args, "overrides"):
        for flag in flags:
            if setting := _as_setting(flag, argv):
                return f"; settings are given as key=value: {setting}"
    return ""


def _as_setting(flag: str, argv: list[str]) -> str | None:
    """`train.max_iters=2` for `--max-iters 2` or `--max_iters=2`, when a setting has that name."""
    from hellolondon.config import full_key

    name, _, value = flag.lstrip("-").partition("=")
    if not value:
        after = argv[argv.index(flag) + 1 :][:1]
        value = (
            after[0] if after and not after[0].startswith("-") and "=" not in after[0] else "VALUE"
        )
    try:
        return f"{full_key(name.replace('-', '_'))}={value}"
    except UserError:
        return None


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """`argv` read as `main` reads it (a sweep file's `command:`, say)."""
    return _parse(build_parser(), argv)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)command parser `args` went through (`corpus collect`'s, say)."""
    while (sub := _subparsers(parser)) and (name := getattr(args, sub.dest, None)) in sub.choices:
        parser = sub.choices[name]
    return parser


def _is_setting(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _stdout_closed() -> bool:
    """Whether the pipe behind stdout has no reader left (a broken pipe elsewhere, a socket
    say, is a real error); if so, stdout is pointed at devnull so that the interpreter's own
    flush at exit does not complain about it once more."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()  # a pipe without a reader polls as an error for its writer
    except (AttributeError, OSError, ValueError):
        return False
    poll.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poll.poll(0)):
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return True


def _disk_full(exc: BaseException) -> bool:
    """A full disk or quota, as an OSError or as the message of a library's own error
    (safetensors says "No space left on device (os error 28)")."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def _shown(filename: object) -> str:
    """The path an error names, with the temporary name of an atomic write (.x.tmp-PID) given
    as the file it was to become: that is the name the user knows."""
    path = Path(str(filename))
    match = re.fullmatch(r"\.(.+)\.tmp-\d+", path.name)
    return str(path.with_name(match.group(1)) if match else path)


class _Sigterm:
    """SIGTERM raises `Terminated` while a command works; once it has done its work (and said
    so), a SIGTERM while it returns and exits changes nothing: the work is complete. Before the
    command starts (its arguments being read) SIGTERM keeps its default, fatal action."""

    def __init__(self) -> None:
        self.working = False

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self)
            self.working = True

    def __call__(self, signum, frame) -> None:
        if self.working:
            raise Terminated


_SIGTERM = _Sigterm()


def main(argv: list[str] | None = None) -> int:
    """The `hellolondon` command. As the program itself (no `argv`), SIGTERM stays ignored once
    the command is done, through the interpreter's exit; a caller's handler is put back."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the command began (its arguments being read)
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _SIGTERM.working = False
        signal.signal(
            signal.SIGTERM, signal.SIG_IGN if argv is None else previous or signal.SIG_DFL
        )


def _main(argv: list[str] | None) -> int:
    _line_buffered()
    parser, args = _read_command_line(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return _run(parser, args)
    except UserError as exc:
        if args.debug:
            raise
        _let_local_rank0_say_it()
        print(f"error: {_from_rank()}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print("terminated", file=sys.stderr)
            return 143  # a shell's code for SIGTERM
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        return 141  # the reader left (`| head`): a shell's code for SIGPIPE, and no message
    except Exception as exc:
        if args.debug:
            raise
        return _say_failure(exc)


def _read_command_line(
    argv: list[str] | None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the arguments it read, with `args.debug` set."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = _parse(parser, argv)
    args.debug = debug
    return parser, args


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The chosen command's exit code; SIGTERM raises `Terminated` while it works."""
    refuse_blank_paths(_chosen(parser, args), args)
    _SIGTERM.start()
    code = int(args.func(args) or 0)
    _SIGTERM.working = False
    return code


def _say_failure(exc: Exception) -> int:
    """One error line for an unexpected failure; the exit code (2 for a path that cannot be
    used, 1 otherwise)."""
    if _disk_full(exc):
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        print(
            f"error: {_from_rank()}the disk is full{where}; free some space or write to "
            "another disk",
            file=sys.stderr,
        )
        return 1
    if (unusable := _unusable_path(exc)) is not None:
        print(f"error: {_from_rank()}{unusable}", file=sys.stderr)
        return 2  # a path given that cannot be used: bad input, as a UserError
    print(
        f"error: {_from_rank()}{type(exc).__name__}: {exc} (run again with --debug for the "
        "traceback)",
        file=sys.stderr,
    )
    return 1


def _unusable_path(exc: Exception) -> str | None:
    """What is wrong with the path a failure names, when it cannot be used; None otherwise."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename:
        return (
            f"{_shown(exc.filename)}: a file stands where a folder is needed on that path; "
            "use another path or move the file"
        )
    if isinstance(exc, FileNotFoundError) and exc.filename:  # e.g. a file under /proc
        return (
            f"{_shown(exc.filename)}: no such file or folder, and it cannot be made there; "
            "check the path or use another one"
        )
    denied = (errno.EROFS, errno.EACCES, errno.EPERM)
    if isinstance(exc, OSError) and exc.errno in denied and exc.filename:
        return (
            f"{_shown(exc.filename)}: {exc.strerror.lower()}; use another path or change its "
            "permissions"
        )
    return None
