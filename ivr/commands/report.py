"""``ivr report --from D --to D [--format html|csv|json] [--switch NAME]``: the compliance report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.config import load_config
from ivr.errors import IvrError
from ivr.records import CallStore
from ivr.report import RENDERERS, build_report
from ivr.sections import Config, HttpConfig
from ivr.web.params import SWITCH_NAME


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _switch(text: str) -> str:
    if not SWITCH_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a switch name (1-63 letters, digits, '.', '_', '-'): {text[:100]!r}")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="compliance report of the call records (per agent, per day, charts)")
    p.add_argument("--from", dest="first", type=_day, required=True, help="first day, YYYY-MM-DD (local time)")
    p.add_argument("--to", dest="last", type=_day, required=True, help="last day, YYYY-MM-DD, inclusive")
    p.add_argument("--format", choices=("html", "csv", "json"), default="html")
    p.add_argument("--config", "-c", default=None, help="TOML config file (database, time zone, agents)")
    p.add_argument("--out", "-o", default=None, help="write to this file (default: standard output)")
    p.add_argument("--database", default=None, help="database URL (overrides [database] url)")
    p.add_argument("--timezone", default=None, help="time zone of the days (overrides [switch] timezone)")
    p.add_argument("--switch", type=_switch, default=None,
                   help="only this switch's calls (default: every switch on record, each shown)")
    p.add_argument("--long-call", type=float, default=None, metavar="SECONDS",
                   help="calls longer than this count as long (default [http] long_call_seconds, "
                        f"{HttpConfig().long_call_seconds:g})")
    p.set_defaults(func=_run)


def _settings(args: argparse.Namespace) -> tuple[str, str, Config]:
    """The database, the time zone and the configuration (its defaults when none is read):
    the agents' names and the thresholds the report labels its figures with."""
    url, tz, config = args.database, args.timezone, Config()
    if url is None or tz is None or args.config is not None:
        config = load_config(args.config)
        url = url or config.database.url
        tz = tz or config.switch.timezone
    return url, tz, config


def _run(args: argparse.Namespace) -> int:
    if args.last < args.first:
        raise IvrError(f"--to {args.last} is before --from {args.first}")
    if args.long_call is not None and args.long_call <= 0:
        raise IvrError("--long-call must be a positive number of seconds")
    url, tz_name, config = _settings(args)
    agents = {a.number: a.name for a in config.agents}
    long_call = args.long_call if args.long_call is not None else config.http.long_call_seconds
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise IvrError(f"unknown time zone {tz_name!r}") from None

    async def build() -> dict[str, Any]:
        store = await CallStore.open(url)
        try:
            return await build_report(store, args.first, args.last, tz, agents=agents, long_call_seconds=long_call,
                                      switch=args.switch, warn_rings=config.rings.warn_rings,
                                      critical_rings=config.rings.critical_rings,
                                      hold_limit=config.hold.choices_after)
        finally:
            await store.close()

    text = RENDERERS[args.format](asyncio.run(build()))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
