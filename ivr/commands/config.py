"""``ivr check-config [FILE]``: validate a configuration file, list every problem."""

from __future__ import annotations

import argparse
import sys

from ivr.config import load_config
from ivr.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", nargs="?", help="configuration file (default: built-in defaults)")
    p.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if config.agi.require_key and not config.agi.key:
        print("warning: no FastAGI key ([agi] key_file or IVR_AGI_KEY): every AGI session will be "
              "refused and calls will go to the dialplan's fallback", file=sys.stderr)
    print(f"{args.file or 'defaults'}: OK ({len(config.agents)} agents, "
          f"languages {', '.join(config.switch.languages)}, time zone {config.switch.timezone})")
    return 0
