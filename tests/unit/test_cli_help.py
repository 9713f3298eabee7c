"""Every --help reads as plain text: no reStructuredText markup from docstrings."""

from __future__ import annotations

import argparse
import re

from ivr.cli import build_parser

RST = re.compile(r"``|::|:(mod|class|func|meth|attr|data):`")


def all_parsers(parser: argparse.ArgumentParser, name: str = "ivr"):
    yield name, parser
    for action in parser._actions:  # argparse keeps sub-parsers here only
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from all_parsers(sub, f"{name} {sub_name}")


def test_help_has_no_rst_markup() -> None:
    seen = []
    for name, parser in all_parsers(build_parser()):
        text = parser.format_help()
        markup = RST.search(text)
        assert markup is None, f"{name} --help has RST markup: {markup and markup.group(0)!r}\n{text}"
        seen.append(name)
    assert {"ivr", "ivr install", "ivr prompts build", "ivr doctor", "ivr greeting"} <= set(seen)
