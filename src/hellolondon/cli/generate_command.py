"""`hellolondon generate`: write text with a trained model."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hellolondon.generate import Sampling
    from hellolondon.model import GPT
    from hellolondon.tokenizer import Tokenizer

EXAMPLES = """examples:
  hellolondon generate runs/london-tiny-demo-20261126-101500 --prompt "In the year of our Lord"
  hellolondon generate runs/RUN/checkpoints/best --temperature 0.7 --top-p 0.9 --seed 7
  hellolondon generate runs/RUN --interactive      # or -i"""


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a run or checkpoint",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    p.add_argument(
        "--max-new-tokens", type=int, default=200,
        help="tokens to add (default 200); past the model's context its view shifts to the newest 3/4",
    )  # fmt: skip
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="0 is greedy: the best token after the repetition penalty, which still applies "
        "(add --repetition-penalty 1 for plain greedy) (default: 0.8)",
    )
    p.add_argument("--top-k", type=int, default=200, help="0 keeps every token (default: 200)")
    p.add_argument("--top-p", type=float, default=0.95, help="1 keeps every token (default: 0.95)")
    p.add_argument(
        "--repetition-penalty", type=float, default=1.1, help="1 turns it off (default: 1.1)"
    )
    p.add_argument(
        "--seed", type=int, default=1337, help="the same seed, the same text (default: 1337)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="ask for prompts until an empty line or Ctrl-D (--prompt, if given, is the first); "
        "Ctrl-C stops the text being written and asks for the next",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hellolondon.generate import Sampling
    from hellolondon.hardware import resolve_device
    from hellolondon.train.checkpoint import load_for_inference

    s = Sampling(
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.repetition_penalty,
        args.seed,
    )
    loaded = load_for_inference(args.checkpoint, resolve_device(args.device, "--device "))
    _note_untrained(loaded.ckpt, loaded.state)
    write = functools.partial(_write, loaded.model, loaded.tokenizer, s)
    if not args.interactive:
        write(args.prompt)
        return 0
    return _session(write, loaded.ckpt, args.prompt)


def _note_untrained(ckpt: Path, state: dict) -> None:
    """Say (on stderr) when the checkpoint holds the starting weights: its text is noise."""
    if state.get("step") == 0:
        print(
            f"note: {ckpt} was saved at step 0, before any training step: its text is random; "
            "train the run further (hellolondon train --resume RUN) first",
            file=sys.stderr,
        )


def _write(model: GPT, tok: Tokenizer, s: Sampling, prompt: str) -> None:
    """The prompt and its continuation on stdout, token by token as they come."""
    from hellolondon.generate import generate_ids

    prompt_ids = tok.encode(prompt)
    sys.stdout.write(prompt)
    ids: list[int] = []
    shown = 0

    def show(token: int) -> None:
        # decode the whole tail: one token may hold only part of a multi-byte character
        nonlocal shown
        ids.append(token)
        text = tok.decode(ids)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)

    try:
        generate_ids(model, prompt_ids, s, tok.eot_id, on_token=show)
    finally:  # Ctrl-C too: the text's line is ended before anything else is said
        sys.stdout.write(tok.decode(ids)[shown:] + "\n")
        sys.stdout.flush()
    _note_past_context(len(prompt_ids) + len(ids), model.config.block_size)


def _note_past_context(n_tokens: int, ctx: int) -> None:
    """Say (on stderr) when the text outgrew the model's context, and how it went on then."""
    from hellolondon.generate import kept_on_shift

    if n_tokens > ctx:
        print(
            f"(the text has {n_tokens} tokens, more than the model's "
            f"context of {ctx}: each new token was predicted from the last "
            f"{kept_on_shift(ctx)} to {ctx})",
            file=sys.stderr,
        )


def _session(write: Callable[[str], None], ckpt: Path, first: str) -> int:
    """Ask for prompts until an empty line or Ctrl-D; `first` (--prompt), if given, is the first."""
    print(f"model from {ckpt}; an empty line or Ctrl-D ends; Ctrl-C stops a text", file=sys.stderr)
    if first:  # the first prompt, given on the command line
        print(f"prompt> {first}")  # as a terminal shows a typed one
        _answer(write, first)
    while True:
        try:
            prompt = input("prompt> ")
        except EOFError:  # end the prompt's line: piped input has no newline of its own here
            print()
            return 0
        except RuntimeError:  # input() without sys.stdin: closed, so as good as empty
            if sys.stdin is not None:
                raise
            return 0
        if not prompt:
            return 0
        _answer(write, prompt)


def _answer(write: Callable[[str], None], prompt: str) -> None:
    """One prompt of a session: its errors and a Ctrl-C end its text, not the session."""
    from hellolondon.errors import Terminated, UserError

    try:
        write(prompt)
    except UserError as exc:  # a prompt that cannot be encoded
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt as exc:  # at the prompt, Ctrl-C ends the session
        if isinstance(exc, Terminated):  # SIGTERM ends it wherever it comes
            raise
        print("(stopped)", file=sys.stderr)
