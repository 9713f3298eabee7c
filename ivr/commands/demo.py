"""``ivr demo``: embedded Asterisk + controller + sample calls showing the five rules."""

from __future__ import annotations

import argparse

from ivr.demo import main


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the embedded Asterisk and the controller, placing sample calls")
    p.add_argument("--company", default="Example", help="company name in the greeting")
    p.add_argument("--cycle", type=float, default=0.0,
                   help="seconds from the start of one round to the next (default: right after it ends)")
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds (default: until Ctrl-C)")
    p.add_argument("--instance", default="default", help="embedded Asterisk instance name")
    p.add_argument("--http-port", type=int, default=None,
                   help="the controller's HTTP API port (default 8780, or a free one if taken; 0: a free port)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    return main(args.company, args.cycle, args.rounds, args.instance, args.http_port)
