"""The argument parser a `slip-hf` command builds, caught at its first parse instead of running the command."""

import argparse

from slip_hf.cli import COMMANDS


class _Parsed(Exception):
    """Raised instead of parsing, so that the command stops there."""


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """`slip-hf <command>`'s parser (argparse's or HfArgumentParser's), without running the command."""
    parsers = []

    def catch(parser, *args, **kwargs):
        parsers.append(parser)
        raise _Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        try:
            COMMANDS[command](["--help"], f"slip-hf {command}") if command in {"train", "ablate"} else COMMANDS[command](["--help"])
        except _Parsed:
            return parsers[0]
    raise AssertionError(f"slip-hf {command} parsed no arguments")
