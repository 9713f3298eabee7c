"""``ivr run --config F``: run the controller until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

from ivr import logs
from ivr.config import load_config
from ivr.controller import Controller


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the controller until SIGINT/SIGTERM")
    p.add_argument("--config", "-c", default=None, help="TOML config file (default: built-in defaults)")
    p.add_argument("--log-format", choices=("json", "console"), default="json")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logs.configure(json=args.log_format == "json")
    config = load_config(args.config)
    asyncio.run(Controller(config).run_forever())
    return 0
