"""MkDocs hook: the command-line reference is every command's `--help`, generated from the parsers at build time,
so the page cannot drift from what `slip-hf <command> --help` prints."""

import contextlib
import io
import os

MARKER = "<!-- cli-reference -->"


def _help(argv: list[str]) -> str:
    from slip_hf.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit:  # argparse exits after printing the help
            pass
    return out.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: `slip-hf --help`, then one section per command with its `--help`."""
    from slip_hf.cli import COMMANDS

    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal: a fixed width keeps the page stable
    sections = [f"```text\n$ slip-hf --help\n{_help(['--help'])}\n```"]
    for command in COMMANDS:
        sections.append(f"## `slip-hf {command}`\n\n```text\n$ slip-hf {command} --help\n{_help([command, '--help'])}\n```")
    return "\n\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
