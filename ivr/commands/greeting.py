"""``ivr greeting`` (the greeting at an instant) and ``ivr calendar`` (a year's periods)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from zoneinfo import ZoneInfo

from ivr.config import load_config
from ivr.errors import ConfigError
from ivr.greeting import choose_greeting, greeting_periods


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("greeting", help="show the greeting a caller hears at a given time")
    p.add_argument("--at", help="ISO date-time, e.g. 2027-02-06T09:30 (naive: the configured "
                   "time zone; default: now)")
    p.add_argument("--lang", help="prompt language (default: [switch] language)")
    p.add_argument("--config", help="configuration file (default: built-in defaults)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=greeting_command)

    c = subparsers.add_parser("calendar", help="list the greeting periods of a year")
    c.add_argument("year", type=int)
    c.add_argument("--config", help="configuration file (default: built-in defaults)")
    c.add_argument("--json", action="store_true", help="print a JSON list")
    c.set_defaults(func=calendar_command)


def greeting_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tz = ZoneInfo(config.switch.timezone)
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at)
        except ValueError as exc:
            raise ConfigError(f"--at {args.at!r}: not an ISO date-time ({exc})") from exc
        if at.tzinfo is None:
            at = at.replace(tzinfo=tz)
    else:
        at = dt.datetime.now(tz)
    greeting = choose_greeting(at, config, args.lang)
    if args.json:
        print(json.dumps(greeting.as_dict(), ensure_ascii=False))
    else:
        local = greeting.at or at
        what = f"holiday {greeting.holiday}" if greeting.holiday else "ordinary day"
        print(f"{local:%Y-%m-%d %H:%M %Z} ({what}, {greeting.daypart}, {greeting.language}): "
              f"{greeting.text}  [{' + '.join(greeting.prompts)}]")
    return 0


def calendar_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    periods = greeting_periods(args.year, config)
    if args.json:
        print(json.dumps([{"holiday": p.holiday, "name": p.name, "start": p.start.isoformat(),
                           "end": p.end.isoformat(), "days": p.days, "source": p.source}
                          for p in periods], ensure_ascii=False))
        return 0
    print(f"Greeting periods {args.year} ({config.holidays.country}, {config.switch.timezone}):")
    for p in periods:
        print(f"  {p.start} .. {p.end}  {p.days:>2} d  {p.holiday:<16} {p.name}"
              + ("" if p.source == "library" else f"  ({p.source})"))
    if not periods:
        print("  (none)")
    return 0
