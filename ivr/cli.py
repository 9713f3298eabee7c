"""The ``ivr`` console command: one entry point, sub-commands in :mod:`ivr.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ivr.errors import IvrError

# Plain text: --help is read in a terminal (no reStructuredText markup).
DESCRIPTION = ("Call-handling controller for Asterisk: phone etiquette enforced at the switch. "
               "Run 'ivr COMMAND --help' for a command's options.")

# Sub-command modules, each with ``register(subparsers)``. A module that is not there
# yet (work in progress) is skipped rather than breaking the whole command.
COMMAND_MODULES = (
    "ivr.commands.asterisk",
    "ivr.commands.run",
    "ivr.commands.demo",
    "ivr.commands.greeting",
    "ivr.commands.config",
    "ivr.commands.prompts",
    "ivr.commands.report",
    "ivr.commands.doctor",
    "ivr.commands.install",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IvrError as exc:
        print(f"ivr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
