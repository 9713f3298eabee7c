"""Asterisk's own CPU for the concurrent-calls benchmark's channels, with no controller.

    nice -n 10 python bench/switch_floor.py            # 220 + 50 + 50 calls, ~1 min

The same channel population as ``concurrent_calls.py`` at N = 200 (220 inbound
Local-channel calls, 50 held caller/agent pairs, 50 app_queue callers), but driven by
the dialplan alone: the inbound side answers, arms ``TALK_DETECT`` and loops
``Playback`` of the greeting and ``Wait(5)`` (no AGI at all); the held pairs are bridged
with the caller in ``MusicOnHold``; the queue callers wait in ``bench-baseline``. The
Asterisk CPU measured here is the floor any controller design pays on this rig: media
frames every 20 ms on each channel (Local channels, ``transmit_silence``), not AGI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_transmit_silence_option,
    proc_cpu_seconds,
    start_switch,
    stop_switch,
    table,
    write_results,
)
from concurrent_calls import Recorder

SETTLE, MEASURE = 8.0, 20.0


async def measure(sw: Any, inbound: int, held: int, queued: int) -> dict[str, Any]:
    rec = await Recorder(sw.ports.ami, sw.secrets().admin).connect()
    try:
        await rec.add_dialplan("floor-caller", "_s.", ["Answer()", "Wait(120)", "Hangup()"])
        await rec.add_dialplan("floor-ivr", "_s.", [
            "Answer()", "Set(TALK_DETECT(set)=1000,512)", "Playback(ivr/zh-CN/hello&ivr/zh-CN/welcome)",
            "Wait(5)", "Goto(3)"])
        await rec.add_dialplan("floor-hold-caller", "_c.", ["Answer()", "Wait(120)", "Hangup()"])
        await rec.add_dialplan("floor-hold-dial", "_d.", ["Dial(Local/a${EXTEN:1}@floor-hold-agent/n,,m)", "Hangup()"])
        await rec.add_dialplan("floor-hold-agent", "_a.", ["Answer()", "Wait(120)", "Hangup()"])
        await rec.add_dialplan("bench-queue-listen", "_q.", [
            "Answer()", "Set(TALK_DETECT(set)=1000,512)", "Wait(120)", "Hangup()"])
        await rec.add_dialplan("bench-queue", "_q.", ["Queue(bench-baseline,,,,120)", "Hangup()"])
        pid = sw.pid() or 0
        idle0, t0 = proc_cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(5.0)  # idle Asterisk, for reference
        idle = (proc_cpu_seconds(pid) - idle0) / (time.monotonic() - t0)
        for i in range(inbound):
            await rec.originate(f"Local/s{i}@floor-caller/n", "floor-ivr", f"s{i}")
        for i in range(held):
            await rec.originate(f"Local/c{i}@floor-hold-caller/n", "floor-hold-dial", f"d{i}")
        for i in range(queued):
            await rec.originate(f"Local/q{i}@bench-queue-listen/n", "bench-queue", f"q{i}")
        await asyncio.sleep(SETTLE)
        channels = len(await rec.channels())
        c0, t0 = proc_cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(MEASURE)
        busy = (proc_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        await rec.hang_up_all("@floor-")
        await rec.hang_up_all("@bench-")
        return {"inbound": inbound, "held": held, "queued": queued, "channels": channels,
                "asterisk_cpu_pct_idle": round(100 * idle, 1), "asterisk_cpu_pct": round(100 * busy, 1),
                "cpu_pct_per_channel": round(100 * busy / max(channels, 1), 3)}
    finally:
        rec.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Asterisk's CPU for the benchmark's channels without a controller")
    ap.add_argument("--inbound", type=int, default=220)
    ap.add_argument("--held", type=int, default=50)
    ap.add_argument("--queued", type=int, default=50)
    shipped = add_transmit_silence_option(ap)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    sw = start_switch(f"bench-floor-{os.getpid()}", transmit_silence=args.transmit_silence)
    transmit_silence = args.transmit_silence or shipped  # what this run measures
    try:
        r = asyncio.run(measure(sw, args.inbound, args.held, args.queued))
        r["transmit_silence"] = transmit_silence == "yes"
    finally:
        stop_switch(sw)
    print(table(["inbound", "held pairs", "queued", "channels", "Asterisk CPU % idle", "Asterisk CPU %",
                 "% per channel"], [[r["inbound"], r["held"], r["queued"], r["channels"],
                                     r["asterisk_cpu_pct_idle"], r["asterisk_cpu_pct"], r["cpu_pct_per_channel"]]]))
    if not args.no_save:
        name = "switch_floor_no_transmit_silence" if transmit_silence == "no" else "switch_floor"
        print(f"-> {write_results(name, r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
