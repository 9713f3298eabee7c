"""``ivr demo``: embedded Asterisk + controller + sample calls, until Ctrl-C."""

from __future__ import annotations

import argparse

from ivr.demo import main


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded Asterisk and the controller, placing sample calls")
    p.add_argument("--company", default="Example", help="company name in the greeting")
    p.add_argument("--cycle", type=float, default=60.0, help="seconds between rounds of sample calls")
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds (default: until Ctrl-C)")
    p.add_argument("--instance", default="default", help="embedded Asterisk instance name")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    return main(args.company, args.cycle, args.rounds, args.instance)
