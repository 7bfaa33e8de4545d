"""docs/cli.md is generated from the `tlgp` argument parser and must match it."""
from __future__ import annotations

import argparse
import pathlib

import pytest

from tlgp_torch.cli.main import build_parser
from tlgp_torch.cli.reference import REGENERATE, cli_markdown

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_md_is_up_to_date():
    assert DOC.is_file(), f"docs/cli.md is missing; generate it with:\n    {REGENERATE}"
    if DOC.read_text(encoding="utf-8") != cli_markdown():
        pytest.fail(f"docs/cli.md is out of date with the tlgp parser; regenerate it with:\n    {REGENERATE}")


def test_every_subcommand_and_flag_is_on_the_page():
    text = cli_markdown()
    commands = ["train", "merge", "submit", "compare", "export", "predict", "data generate"]
    for command in commands:
        assert f"### `tlgp {command}`" in text, command
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {o for p in sub.choices.values() for a in p._actions for o in a.option_strings if o not in ("-h", "--help")}
    flags |= {o for a in sub.choices["data"]._actions if isinstance(a, argparse._SubParsersAction)
              for p in a.choices.values() for b in p._actions for o in b.option_strings if o not in ("-h", "--help")}
    assert "--batch-size" in flags and "--workers" in flags
    assert not [f for f in flags if f"`{f}`" not in text]
