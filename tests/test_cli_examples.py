"""Every example line in a command's `--help` parses as written (comments after `#` aside)."""

from __future__ import annotations

import argparse
import shlex

import pytest

from hellolondon.cli import _parse, build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = "hellolondon"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _examples() -> list[tuple[str, str]]:
    found = []
    for name, parser in _parsers(build_parser()):
        for line in (parser.epilog or "").splitlines():
            words = line.split("#", 1)[0].split()
            if "hellolondon" in words and "|" not in words and ">" not in words:
                found.append((name, " ".join(words[words.index("hellolondon") + 1 :])))
    return found


EXAMPLES = _examples()


def test_examples_are_found():
    assert len(EXAMPLES) > 40


@pytest.mark.parametrize(("command", "example"), EXAMPLES, ids=[e for _, e in EXAMPLES])
def test_help_example_parses(command, example, capsys):
    try:
        _parse(build_parser(), shlex.split(example))
    except SystemExit:
        pytest.fail(
            f"`{command} --help` shows `hellolondon {example}`, which does not parse: "
            f"{capsys.readouterr().err.strip()}"
        )


def test_every_command_help_shows_an_example():
    shown = {command for command, _ in EXAMPLES}
    missing = [name for name, _ in _parsers(build_parser()) if name not in shown]
    assert not missing, f"--help without an example: {missing}"
