"""AMI ingest: events per second through the controller's full path vs. panoramisk's
bare parse-and-dispatch of the same bytes, in one run, on one core.

    python bench/ami_ingest.py              # 200 k events, 3 rounds each, core 0
    python bench/ami_ingest.py --quick      # 20 k events, 1 round

The input is generated deterministically from a stream recorded on the real switch
(``bench/data/ami_stream.raw.gz``, see ``record_ami.py``): ``copies`` copies of it, each
with its own Uniqueids, Linkedids, channel and bridge names, started ``spread`` seconds
apart and merged by Asterisk timestamp, so that many calls are in flight at once.

(a) **controller path**: the bytes go to the controller's own protocol (its
``LeanManager``'s ``protocol_factory``: ``AmiProtocol``, ivr/ami/protocol.py, panoramisk's
``AMIProtocol`` with a leaner frame parser), whose ``LeanManager.dispatch`` feeds
``AmiConnection._dispatch``
(ivr/ami/connection.py); subscribed are the ``ChannelTracker`` (ivr/ami/channels.py) and
the ``RingMonitor`` (ivr/rings/) with its ``RingWatch`` machines under the
``TimerService``, the controller's Prometheus metrics and event bus, JSON logging (to
/dev/null), and an alarm sink that counts. The timer clock and the monitor's wall clock
follow the replayed Asterisk timestamps, and due timers fire before each event, so the
ring alarms (4th and 7th ring) are decided exactly as in the recording.
(b) **bare panoramisk**: a plain ``Manager`` and ``AMIProtocol`` with one no-op ``"*"``
callback.

The bytes are fed in 64 KiB chunks, as a socket read delivers them.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import gzip
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, pin_to_core, table, write_results

TEMPLATE = DATA / "ami_stream.raw.gz"
CHUNK = 65536
ID_KEYS = ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid", "BridgeUniqueid", "BridgeId",
           "TargetUniqueid", "TargetLinkedid", "OrigTransfererUniqueid")
NAME_KEYS = ("Channel", "DestChannel", "Newname", "Peer", "TargetChannel")
_SEQ = re.compile(r"-([0-9a-f]{8})(;[12])?$")


# -- the input ------------------------------------------------------------------------
def parse_events(raw: bytes) -> list[list[tuple[str, str]]]:
    """The events of a raw AMI byte stream (responses and the banner dropped), each as
    its ordered header list."""
    events = []
    for block in raw.decode("utf-8", "replace").split("\r\n\r\n"):
        headers = []
        for line in block.split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep:
                headers.append((key, value))
        if headers and headers[0][0] == "Event":
            events.append(headers)
    return events


def _rename(value: str, key: str, copy: int) -> str:
    if not value or copy == 0:
        return value
    if key in ID_KEYS:
        return f"{value}-{copy}"
    match = _SEQ.search(value)
    if match:  # keep the -XXXXXXXX form (device_of relies on it), made unique per copy
        seq = (int(match.group(1), 16) + copy * 0x10000) & 0xFFFFFFFF
        return value[:match.start()] + f"-{seq:08x}" + (match.group(2) or "")
    return value


def build_stream(template: list[list[tuple[str, str]]], copies: int, spread: float) -> tuple[bytes, int]:
    """``copies`` renamed copies of the template, copy k shifted by k*spread seconds,
    merged by timestamp; returns (bytes as Asterisk would send them, event count)."""
    timed: list[tuple[float, int, str]] = []
    n = 0
    for k in range(copies):
        for headers in template:
            lines = []
            at = 0.0
            for key, original in headers:
                value = original
                if key == "Timestamp":
                    at = float(original) + k * spread
                    value = f"{at:.6f}"
                elif key in ID_KEYS or key in NAME_KEYS:
                    value = _rename(original, key, k)
                lines.append(f"{key}: {value}\r\n")
            timed.append((at, n, "".join(lines) + "\r\n"))
            n += 1
    timed.sort()
    text = "Asterisk Call Manager/11.0.0\r\n" + "".join(t for _, _, t in timed)
    return text.encode(), len(timed)


def load_template(path: Path = TEMPLATE) -> list[list[tuple[str, str]]]:
    with gzip.open(path, "rb") as f:
        return parse_events(f.read())


# -- the two paths --------------------------------------------------------------------
class _NullTransport:
    def write(self, _data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default


class ReplayClock:
    """Asterisk's clock as the replay advances (the last event's Timestamp)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingSink:
    """The alarm sink, stubbed: counts alarms by level."""

    counts: dict[str, int] = field(default_factory=dict)

    def emit(self, notice: Any) -> None:
        self.counts[notice.level] = self.counts.get(notice.level, 0) + 1

    async def close(self) -> None:
        return None


def _feed(protocol: Any, data: bytes) -> float:
    start = time.perf_counter()
    for i in range(0, len(data), CHUNK):
        protocol.data_received(data[i:i + CHUNK])
    return time.perf_counter() - start


def bare_path(data: bytes) -> dict[str, Any]:
    """panoramisk alone: AMIProtocol.data_received -> Manager.dispatch -> a no-op."""
    from panoramisk import Manager
    from panoramisk.ami_protocol import AMIProtocol

    seen = [0]

    def noop(_manager: Any, _event: Any) -> None:
        seen[0] += 1

    manager = Manager(loop=asyncio.get_running_loop(), ping_delay=0)
    manager.register_event("*", noop)
    protocol = AMIProtocol()
    protocol.connection_made(_NullTransport())
    protocol.factory = manager
    seconds = _feed(protocol, data)
    return {"seconds": seconds, "dispatched": seen[0]}


async def controller_path(data: bytes) -> dict[str, Any]:
    """The controller's path (see the module docstring); returns time and what it decided."""
    from ivr.ami.channels import ChannelTracker, event_time
    from ivr.ami.connection import AmiConnection
    from ivr.ami.manager import LeanManager
    from ivr.events import EventBus
    from ivr.metrics import Metrics
    from ivr.rings.monitor import RingMonitor, RingSettings
    from ivr.rules.rings import Cadence
    from ivr.timers import TimerService

    clock = ReplayClock()
    conn = AmiConnection("127.0.0.1", 0, "ivr", "unused")
    tracker = ChannelTracker()
    tracker.attach(conn)
    timers = TimerService(clock=clock)
    sink = CountingSink()
    monitor = RingMonitor(conn, tracker, timers, RingSettings(Cadence.for_zone("cn")), bus=EventBus(),
                          sinks=[sink], metrics=Metrics(), wall=clock)
    monitor.attach()
    dispatched = [0]

    def tick(_manager: Any, event: Any) -> None:
        """Before each event: the clocks move to its timestamp and due timers fire."""
        dispatched[0] += 1
        at = event_time(event)
        if at > clock.now:
            clock.now = at
            timers.fire_due()

    manager = LeanManager(lambda _exc: None, host="127.0.0.1", port=0, loop=asyncio.get_running_loop())
    manager.register_event("*", tick)
    manager.register_event("*", conn._dispatch)
    protocol = manager.config["protocol_factory"]()  # what AmiConnection connects with
    protocol.connection_made(_NullTransport())
    manager.attach(protocol)
    try:
        seconds = _feed(protocol, data)
        figures = monitor.figures()
        result = {
            "seconds": seconds, "dispatched": dispatched[0], "channels_left": len(tracker),
            "legs_left": len(monitor.legs), "alarms": dict(sorted(sink.counts.items())),
            "answered": sum(f["within_three"] + f["late"] for f in figures.values()),
            "not_answered": sum(f["not_answered"] for f in figures.values()),
            "apologised": sum(f["apologised"] for f in figures.values()),
        }
    finally:
        await monitor.close()
        await timers.close()
    return result


_DEVNULL: Any = None


@contextmanager
def quiet_logs() -> Iterator[None]:
    """JSON logging as ``ivr run`` configures it, written to /dev/null; the previous
    structlog configuration is restored afterwards."""
    import structlog

    from ivr import logs

    global _DEVNULL  # noqa: PLW0603 - one /dev/null handle for the life of the process (below)
    if _DEVNULL is None:
        # Kept open for the life of the process: a logger bound inside the block may be
        # kept by an object that outlives it (a closed file there broke later tests).
        _DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - kept open on purpose (above)
        atexit.register(_DEVNULL.close)
    before = structlog.get_config()
    logs.configure(json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_DEVNULL))
    try:
        yield
    finally:
        structlog.configure(**before)


async def run_ingest(data: bytes, events: int, rounds: int = 3) -> dict[str, Any]:
    """Replay ``data`` through both paths ``rounds`` times (alternating); best of each."""
    bare, ctl = [], []
    with quiet_logs():
        for _ in range(rounds):
            gc.collect()
            bare.append(bare_path(data))
            gc.collect()
            ctl.append(await controller_path(data))
    best_bare = min(bare, key=lambda r: r["seconds"])
    best_ctl = min(ctl, key=lambda r: r["seconds"])
    bare_rate = events / best_bare["seconds"]
    ctl_rate = events / best_ctl["seconds"]
    return {
        "events": events, "bytes": len(data), "rounds": rounds,
        "bare": {"events_per_s": round(bare_rate), "seconds": round(best_bare["seconds"], 4),
                 "dispatched": best_bare["dispatched"], "all_seconds": [round(r["seconds"], 4) for r in bare]},
        "controller": {"events_per_s": round(ctl_rate), "seconds": round(best_ctl["seconds"], 4),
                       **{k: v for k, v in best_ctl.items() if k != "seconds"},
                       "all_seconds": [round(r["seconds"], 4) for r in ctl]},
        "ratio": round(ctl_rate / bare_rate, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="AMI ingest: controller path vs. bare panoramisk")
    p.add_argument("--copies", type=int, default=50, help="copies of the recorded template (50: ~200 k events)")
    p.add_argument("--spread", type=float, default=2.0, help="s between the copies' starts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--core", type=int, default=0, help="CPU core to run on")
    p.add_argument("--quick", action="store_true", help="5 copies, 1 round")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.copies, args.rounds = 5, 1
    pin_to_core(args.core)
    template = load_template()
    data, events = build_stream(template, args.copies, args.spread)
    result = asyncio.run(run_ingest(data, events, args.rounds))
    result.update({"template_events": len(template), "copies": args.copies, "spread_s": args.spread,
                   "core": args.core, "targets": {"events_per_s": 50000, "ratio": 0.5}})
    print(table(["path", "events", "best s", "events/s", "ratio"], [
        ["bare panoramisk parse+dispatch", events, result["bare"]["seconds"], result["bare"]["events_per_s"], 1.0],
        ["controller (tracker+rings+alarms)", events, result["controller"]["seconds"],
         result["controller"]["events_per_s"], result["ratio"]],
    ]))
    c = result["controller"]
    print(f"controller decided: alarms {c['alarms']}, answered {c['answered']}, not answered "
          f"{c['not_answered']}, apologies {c['apologised']}; channels left {c['channels_left']}")
    if not args.no_save:
        print(f"-> {write_results('ami_ingest', result, with_asterisk=True)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
