"""``ivr doctor [--config F]``: verify the live switch against the deployment checklist."""

from __future__ import annotations

import argparse
import asyncio

from ivr import logs
from ivr.config import load_config
from ivr.doctor import run_doctor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the live switch: AMI, privileges, dialplan, FastAGI, prompts")
    p.add_argument("--config", "-c", default=None, help="the controller's TOML config")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per check (default 10)")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    logs.configure(json=False, level="WARNING")
    checks = asyncio.run(run_doctor(load_config(args.config), timeout=args.timeout))
    for check in checks:
        print(check.line())
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
