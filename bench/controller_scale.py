"""The controller alone at scale: 2,000 silent-call flows through the real FastAGI server
and 2,000 hold flows under the TimerService, on one core, no Asterisk.

    nice -n 10 python bench/controller_scale.py            # about 80 s
    python bench/controller_scale.py --quick               # 20 + 20 flows, short timers

Two processes: the **controller** (pinned to core 0) runs the real
:class:`~ivr.agi.server.FastAgiServer` with the real
:class:`~ivr.flows.inbound.InboundFlow` (greeting choice, the
:class:`~ivr.rules.silent.SilentCall` script, one ``WAIT FOR DIGIT`` per pause, the event bus)
and a :class:`~ivr.timers.TimerService` driving one
:class:`~ivr.rules.hold.HoldTimer` per held call (reminder at 30 s, choices at 60 s,
resume at 65 s). The **load generator** (pinned to core 1) opens one FastAGI connection
per call on loopback and answers like Asterisk would: a prompt takes ``--prompt`` s,
``WAIT FOR DIGIT n`` takes n ms, the caller stays silent; each slot places a new call
when the last one is released, so the calls stay concurrent while the holds run.

Timer error: for a silent call, the caller's side sees the prompt end (its reply to
``STREAM FILE``) and the controller's next action (``EXEC UserEvent IvrSilentCall``):
error = gap - pause. For a hold, the controller's own deadline (hold start + 30/60 s)
vs. the moment the action was delivered to the hold flow. Memory per call: controller
RSS (``/proc``) at peak minus before the calls, divided by the flows in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import proc_cpu_seconds, proc_rss_kb, spread, summary_ms, table, write_results


@dataclass(frozen=True)
class Params:
    calls: int = 2000  # silent-call slots (concurrent FastAGI sessions)
    holds: int = 2000  # concurrent hold flows
    pause: float = 5.0
    prompt: float = 1.0  # s each prompt "plays" on the fake switch
    interval: float = 30.0
    choices_after: float = 60.0
    hold_for: float = 65.0
    ramp: float = 5.0  # s over which the calls and the holds start
    new_calls_until: float = 45.0  # s after start: slots stop placing new calls


# -- the controller side --------------------------------------------------------------
class _SilentDetector:
    """The caller is heard reliably and never speaks (TALK_DETECT on a silent line)."""

    def listen(self, call: Any, since: float | None = None) -> Any:
        from contextlib import asynccontextmanager

        from ivr.flows.speech import SpeechWatch

        @asynccontextmanager
        async def watch() -> Any:
            await call.set_variable("TALK_DETECT(set)", "1000,512")
            yield SpeechWatch(call.uniqueid, reliable=True)

        return watch()

    async def wake_until(self, channel: str, woken: asyncio.Event) -> int:
        await woken.wait()  # never heard, so never woken
        return 0


def _config(pause: float) -> Any:
    from ivr.config import load_config

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f"[silence]\npause = {pause}\n")
    try:
        return load_config(f.name, env={})
    finally:
        os.unlink(f.name)


@dataclass
class HoldLoad:
    """Hold flows under the TimerService; lateness of each delivered action."""

    late: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    delivered: int = 0
    done: int = 0

    async def run(self, timers: Any, p: Params) -> None:
        from ivr.rules.hold import HoldTimer, OfferChoices, Remind

        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def start(i: int) -> None:
            timer = HoldTimer(p.interval, p.choices_after)
            t0 = timers.now()
            timer.start(t0)

            def on_actions(actions: list[Any], timer: Any = timer, t0: float = t0) -> None:
                now = timers.now()
                for a in actions:
                    if isinstance(a, OfferChoices):
                        self.late["choices"].append(now - (t0 + p.choices_after))
                    elif isinstance(a, Remind):
                        self.late["reminder"].append(now - (t0 + a.count * p.interval))
                    self.delivered += 1

            timers.add(("hold", i), timer, on_actions)

            def resume() -> None:
                timer.resume(timers.now())
                timers.remove(("hold", i))
                self.done += 1
                if self.done == p.holds and not finished.done():
                    finished.set_result(None)

            loop.call_later(p.hold_for, resume)

        for i in range(p.holds):
            loop.call_later(p.ramp * i / max(p.holds, 1), start, i)
        if p.holds:
            await finished


BENCH_KEY = "bench-fastagi-key-0123456789"  # the fake Asterisk proves itself like the real one


async def serve_controller(p: Params, ready: Any, go: Any) -> dict[str, Any]:
    """Run the FastAGI server and the hold load; ``ready(port)`` once listening, then
    ``await go()`` before the holds start. Returns the hold figures when all are done and
    the server is idle."""
    from ivr.agi.server import FastAgiServer
    from ivr.events import EventBus
    from ivr.flows.inbound import InboundFlow
    from ivr.timers import TimerService

    flow = InboundFlow(_config(p.pause), datetime.now, speech=_SilentDetector(), bus=EventBus())
    server = FastAgiServer({"inbound": flow}, "127.0.0.1", 0, key=BENCH_KEY)
    await server.start()
    timers = TimerService()
    holds = HoldLoad()
    try:
        ready(server.port)
        await go()
        await holds.run(timers, p)
        return {"hold_late": dict(holds.late), "hold_actions": holds.delivered, "holds_done": holds.done}
    finally:
        await timers.close()
        await server.close(1.0)


def _controller_process(p: Params, conn: Any) -> None:
    from ami_ingest import quiet_logs

    os.sched_setaffinity(0, {0})

    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    with quiet_logs():
        result = asyncio.run(serve_controller(p, conn.send, go))
    conn.send(result)


# -- the load generator (a fake Asterisk) ---------------------------------------------
@dataclass
class ClientStats:
    pause_errors: list[float] = field(default_factory=list)
    turnaround: list[float] = field(default_factory=list)
    calls: int = 0
    released: int = 0
    commands: int = 0
    failures: list[str] = field(default_factory=list)


async def fake_call(port: int, uid: str, p: Params, stats: ClientStats) -> None:
    """One silent caller's FastAGI session, answered as Asterisk would."""
    from ivr.agi.testing import environment, wire

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire(environment("inbound", BENCH_KEY, uniqueid=uid, channel=f"Local/{uid}@bench;1",
                                  callerid="13800000000")))
    prompt_end: float | None = None
    replied = time.monotonic()
    stats.calls += 1
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            now = time.monotonic()
            stats.turnaround.append(now - replied)
            stats.commands += 1
            cmd = line.decode().strip()
            reply = "200 result=0"
            if cmd.startswith("STREAM FILE"):
                await asyncio.sleep(p.prompt)
                reply = "200 result=0 endpos=8000"
                prompt_end = None  # set when the reply goes out
            elif cmd.startswith("WAIT FOR DIGIT"):
                await asyncio.sleep(int(cmd.split()[-1]) / 1000)
            elif cmd.startswith("EXEC UserEvent") and "IvrSilentCall" in cmd:
                if prompt_end is not None:
                    stats.pause_errors.append(now - prompt_end - p.pause)
                    prompt_end = None
                if "release" in cmd:
                    stats.released += 1
            elif cmd.startswith("GET VARIABLE"):
                reply = f"200 result=1 ({uid})"
            elif cmd.startswith("GET FULL VARIABLE ivrsync-"):  # the controller's sync probe
                reply = f"200 result=1 ({cmd.split()[-1]})"
            elif cmd.startswith(("ANSWER", "SET VARIABLE")):
                reply = "200 result=1" if cmd.startswith("SET") else "200 result=0"
            writer.write(reply.encode() + b"\n")
            replied = time.monotonic()
            if cmd.startswith("STREAM FILE"):
                prompt_end = replied
    except ConnectionError as exc:
        stats.failures.append(f"{uid}: {exc}")
    finally:
        writer.close()


async def drive_clients(port: int, p: Params, started: float | None = None) -> ClientStats:
    stats = ClientStats()
    t0 = started if started is not None else time.monotonic()

    async def slot(i: int) -> None:
        await asyncio.sleep(p.ramp * i / max(p.calls, 1))
        k = 0
        while True:
            await fake_call(port, f"b{i}.{k}", p, stats)
            k += 1
            if time.monotonic() - t0 >= p.new_calls_until:
                break

    await asyncio.gather(*(slot(i) for i in range(p.calls)))
    return stats


def _load_process(port: int, p: Params, conn: Any) -> None:
    os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    stats = asyncio.run(drive_clients(port, p))
    conn.send(stats)


# -- in-process run (the smoke test) and the two-process run --------------------------
async def run_in_process(p: Params) -> dict[str, Any]:
    """Controller and load generator in one event loop: proves the code runs."""
    loop = asyncio.get_running_loop()
    port_f: asyncio.Future[int] = loop.create_future()
    go = asyncio.Event()
    controller = asyncio.ensure_future(serve_controller(p, port_f.set_result, go.wait))
    port = await port_f
    go.set()
    stats = await drive_clients(port, p)
    holds = await controller
    return _figures(p, stats, holds)


def _figures(p: Params, stats: ClientStats, holds: dict[str, Any]) -> dict[str, Any]:
    late = holds["hold_late"]
    return {
        "silent_calls": stats.calls, "released": stats.released, "agi_commands": stats.commands,
        "pause_error": summary_ms(stats.pause_errors),
        "hold_error": summary_ms(late.get("reminder", []) + late.get("choices", [])),
        "reminder_error": summary_ms(late.get("reminder", [])), "choices_error": summary_ms(late.get("choices", [])),
        "agi_turnaround": summary_ms(stats.turnaround),
        "holds_done": holds["holds_done"], "hold_actions": holds["hold_actions"], "failures": stats.failures[:10],
    }


def run_processes(p: Params) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ctl_end, ctl_peer = ctx.Pipe()
    ctl = ctx.Process(target=_controller_process, args=(p, ctl_peer), daemon=True)
    ctl.start()
    port = ctl_end.recv()
    idle_rss = proc_rss_kb(ctl.pid)
    cpu0 = proc_cpu_seconds(ctl.pid)
    load_end, load_peer = ctx.Pipe()
    load = ctx.Process(target=_load_process, args=(port, p, load_peer), daemon=True)
    t0 = time.monotonic()
    load.start()
    ctl_end.send("go")
    peak = idle_rss
    samples = []
    while not load_end.poll(1.0):
        rss = proc_rss_kb(ctl.pid)
        peak = max(peak, rss)
        samples.append((round(time.monotonic() - t0, 1), round(proc_cpu_seconds(ctl.pid) - cpu0, 2), rss))
    stats: ClientStats = load_end.recv()
    holds = ctl_end.recv()
    cpu = proc_cpu_seconds(ctl.pid) - cpu0 if ctl.is_alive() else samples[-1][1]
    duration = time.monotonic() - t0
    ctl.join(10)
    load.join(10)
    result = _figures(p, stats, holds)
    in_flight = p.calls + p.holds
    result["controller"] = {
        "cpu_s": round(cpu, 2), "cpu_pct_avg": round(100 * cpu / duration, 1),
        "rss_idle_mb": round(idle_rss / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
        "rss_kb_per_flow": round((peak - idle_rss) / in_flight, 2),
        "cpu_pct_max_1s": round(100 * max((b[1] - a[1]) / max(b[0] - a[0], 1e-9)
                                          for a, b in itertools.pairwise(samples)), 1) if len(samples) > 1 else None,
    }
    result["duration_s"] = round(duration, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the controller alone at scale (fake FastAGI clients, one core)")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--holds", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="20 + 20 flows, pauses 1 s, hold reminders every 3 s")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        p = Params(calls=20, holds=20, pause=1.0, prompt=0.2, interval=3.0, choices_after=6.0, hold_for=7.0,
                   ramp=1.0, new_calls_until=4.0)
    else:
        p = Params(calls=args.calls, holds=args.holds)
    r = run_processes(p)
    r["params"] = p.__dict__
    r["targets"] = {"p99_timer_error_ms": 50}
    c = r["controller"]
    print(table(["flows", "silent calls", "pause err ms p50/p99/max", "hold err ms p50/p99/max",
                 "AGI turnaround ms p50/p99", "ctl CPU % avg/max", "RSS kB/flow", "RSS peak MB"], [[
        f'{p.calls}+{p.holds}', r["silent_calls"],
        spread(r["pause_error"]),
        spread(r["hold_error"]),
        spread(r["agi_turnaround"], "p50_ms", "p99_ms"),
        f'{c["cpu_pct_avg"]}/{c["cpu_pct_max_1s"]}', c["rss_kb_per_flow"], c["rss_peak_mb"]]]))
    if r["failures"]:
        print("failures:", r["failures"])
    if not args.no_save:
        name = "controller_scale_quick" if args.quick else "controller_scale"
        print(f"-> {write_results(name, r, with_asterisk=False)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
