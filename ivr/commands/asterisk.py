"""``ivr asterisk build|up|down|status|env|cli``: the embedded Asterisk."""

from __future__ import annotations

import argparse
import json
import shlex

from ivr.switch.embedded import EmbeddedSwitch, Ports


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("asterisk", help="the embedded Asterisk (Debian sid chroot)")
    p.add_argument("--name", default="default", help="instance name (default: default)")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = acts.add_parser("build", help="build the root filesystem (once; cached)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(func=_build)
    u = acts.add_parser("up", help="start it and wait until FullyBooted")
    u.add_argument("--ami-port", type=int, default=None)
    u.add_argument("--agi-port", type=int, default=None)
    u.add_argument("--sip-port", type=int, default=None)
    u.set_defaults(func=_up)
    acts.add_parser("down", help="stop it cleanly").set_defaults(func=_down)
    acts.add_parser("status", help="is it running? (JSON: pid, ports, trunk SIP URI, uptime)").set_defaults(func=_status)
    e = acts.add_parser("env", help="print export lines for a controller: AMI user ivr, API token, ports")
    e.add_argument("--admin", action="store_true",
                   help="also the all-classes AMI user, as IVR_AMI_ADMIN_USERNAME/IVR_AMI_ADMIN_SECRET")
    e.set_defaults(func=_env)
    c = acts.add_parser("cli", help="run an Asterisk CLI command")
    c.add_argument("cli_command", help='for example "core show channels"')
    c.set_defaults(func=_cli)


def _switch(args: argparse.Namespace, ports: Ports | None = None) -> EmbeddedSwitch:
    return EmbeddedSwitch(args.name, ports=ports)


def _build(args: argparse.Namespace) -> int:
    _switch(args).build(force=args.force)
    return 0


def _up(args: argparse.Namespace) -> int:
    ports = None
    if args.ami_port or args.agi_port or args.sip_port:
        d = Ports()
        ports = Ports(ami=args.ami_port or d.ami, agi=args.agi_port or d.agi, sip=args.sip_port or d.sip)
    _switch(args, ports).up()
    return 0


def _down(args: argparse.Namespace) -> int:
    _switch(args).down()
    return 0


def _status(args: argparse.Namespace) -> int:
    info = _switch(args).status()
    print(json.dumps(info, indent=2))
    return 0 if info["running"] else 3


def _env(args: argparse.Namespace) -> int:
    for key, value in _switch(args).env(admin=args.admin).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _cli(args: argparse.Namespace) -> int:
    print(_switch(args).cli(args.cli_command), end="")
    return 0
