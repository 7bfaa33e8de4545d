"""The command-line reference (docs/cli.md), generated from the `tlgp` argument parser.

Every subcommand with its usage line and every argument with its default and help text, as argparse knows
them, so the page cannot drift from the code. Regenerate it after changing a command::

    python -m tlgp_torch.cli.reference --out docs/cli.md

Example:
    >>> from tlgp_torch.cli.reference import cli_markdown
    >>> "### `tlgp train`" in cli_markdown()
    True
"""
from __future__ import annotations

import argparse
import sys

from tlgp_torch.cli.main import build_parser
from tlgp_torch.config.reference import write_page

__all__ = ["REGENERATE", "cli_markdown"]

REGENERATE = "python -m tlgp_torch.cli.reference --out docs/cli.md"


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(command line, help, parser) of every leaf subcommand, depth first in the parser's order."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                nested = _subcommands(sub, f"{prefix} {name}")
                out += nested or [(f"{prefix} {name}", helps.get(name, ""), sub)]
    return out


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        if action.choices:
            name += " (" + " \\| ".join(str(c) for c in action.choices) + ")"
        if not action.option_strings:
            default = "required"
        elif action.nargs == 0:
            default = "off"
        else:
            default = "unset" if action.default is None else f"`{action.default}`"
        rows.append(f"| {name} | {default} | {_cell(action.help or '')} |")
    return rows


def cli_markdown() -> str:
    """docs/cli.md: every `tlgp` subcommand, its usage and arguments."""
    parser = build_parser()
    lines = ["# Command line: `tlgp`", "",
             "<!-- Generated from the argument parser; do not edit. Regenerate with:", f"     {REGENERATE} -->", "",
             f"{parser.description}. `tlgp --version` prints the version; `tlgp COMMAND --help` the text below.",
             "Exit codes: 0 done, 1 some models failed or are missing (train, merge), 2 a config or data error",
             "(one line naming the file and the key, or the file, line and column; `--debug` shows the traceback),",
             "130 interrupted (finished work is kept: run the same command again to resume).",
             "Config keys are in [configuration.md](configuration.md).", ""]
    for command, help_text, sub in _subcommands(parser, "tlgp"):
        usage = " ".join(sub.format_usage().replace("usage: ", "", 1).split())
        lines += [f"### `{command}`", "", f"{help_text[:1].upper()}{help_text[1:]}.", "", "```text", usage, "```", "",
                  "| argument | default | meaning |", "|---|---|---|", *_argument_rows(sub), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md to --out (default: print it)."""
    return write_page(cli_markdown, "python -m tlgp_torch.cli.reference", __doc__.split("\n")[0], "docs/cli.md", argv)


if __name__ == "__main__":
    sys.exit(main())
