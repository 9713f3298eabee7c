"""Concurrent calls on the real embedded switch: timer accuracy, AGI latency, controller
CPU and memory per call, side by side with Asterisk's own periodic announcements.

    python bench/concurrent_calls.py --quick        # N = 20, about 80 s
    nice -n 10 python bench/concurrent_calls.py     # N = 50, 100, 200, about 5 min

For each N, in one run (a fresh controller process ``ivr run --config ...`` each time,
one embedded Asterisk on free loopback ports for all):

* **silent callers**: N slots, each placing a Local-channel call into ``ivr-inbound``
  whose caller side stays silent (``Answer``, ``Wait``), then the next call when it is
  released: greeting, three prompts, three 5 s pauses, release. New calls start while the
  held calls below are on hold, so the reminders fall under load.
* **held calls**: H = max(10, N/4) caller/agent pairs (Local channels, ``Dial``), put on
  hold through the controller's HTTP API (``POST /api/calls/{id}/hold``), resumed after
  65 s: reminder at 30 s, choices at 60 s, timed by the controller.
* **speaking callers**: S = max(5, N/10) slots whose caller side plays
  ``ivr-test/caller_speech`` so that the speech starts 0.5-3.7 s into pause 1: the
  controller hears it (``TALK_DETECT``), wakes the flow's one long ``WAIT FOR DIGIT``
  (AMI ``PlayDTMF``) and hands the caller on. New calls until the same 42 s.
* **baseline**: H callers in queue ``bench-baseline`` (settings of the shipped ``support``
  queue: no members, ``periodic-announce-frequency = 30``; music = silence, see
  ``common.BENCH_CONFIG``): Asterisk's own 30 s reminder. The announcement is heard on
  the caller's side of the Local channel by ``TALK_DETECT`` (the first one therefore
  includes the detector's 20-40 ms and the file's lead-in; the spacing between two does not).

Figures, all from Asterisk's own AMI event timestamps (admin connection, event filter):

* pause error: ``AGIExecEnd`` of a prompt's ``STREAM FILE`` -> ``AGIExecStart`` of the
  controller's next action (``EXEC UserEvent IvrSilentCall``) minus the 5 s pause;
* reminder error: ``UserEvent IvrHold State: start`` -> ``AGIExecStart`` of ``STREAM FILE
  .../hold_reminder`` minus 30 s, and of ``hold_choices`` minus 60 s;
* baseline error: queue join (``QueueCallerJoin``) or the previous announcement ->
  ``ChannelTalkingStart`` of the next announcement, minus 30 s;
* AGI round trip: ``AGIExecEnd`` of one command -> ``AGIExecEnd`` of the next, quick
  command (SET/GET VARIABLE, EXEC UserEvent, ANSWER) of the same call: reply to the
  controller, its processing, its next command and Asterisk's execution; turnaround:
  ``AGIExecEnd`` -> next ``AGIExecStart``;
* speech hand-on (speaking callers heard in a pause): ``ChannelTalkingStart`` on the
  inbound channel -> ``AGIExecEnd`` of the woken ``WAIT FOR DIGIT`` (wake) and ->
  ``UserEvent IvrSilentCall Stage: responded`` (hand-on);
* AGI commands per second: every ``AGIExecStart`` over the run's length;
* controller CPU (utime+stime) and RSS from /proc/<pid>, sampled every second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BASELINE_QUEUE,
    ROOT,
    add_transmit_silence_option,
    proc_cpu_seconds,
    proc_rss_kb,
    start_switch,
    stop_switch,
    summary_ms,
    table,
    write_results,
)

PAUSE = 5.0
INTERVAL, CHOICES_AT, HOLD_FOR = 30.0, 60.0, 65.0
NEW_CALLS_UNTIL = 42.0  # s after the holds start: the last silent calls end after the choices
TOKEN = "bench-token-0123456"
FILTERS = ("AGIExecStart", "AGIExecEnd", "UserEvent", "QueueCallerJoin", "ChannelTalkingStart",
           "BridgeEnter", "Hangup", "OriginateResponse")  # panoramisk waits for the last one
QUICK_COMMANDS = ("SET VARIABLE", "GET VARIABLE", "EXEC UserEvent", "ANSWER", "EXEC USEREVENT")


# -- analysis (pure: events are dicts as AMI sent them) -------------------------------
def _ts(e: dict[str, Any]) -> float:
    return float(e["Timestamp"])


def agi_by_channel(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("Event") in ("AGIExecStart", "AGIExecEnd"):
            out[e.get("Channel", "")].append(e)
    for lst in out.values():
        lst.sort(key=_ts)
    return out


def pause_errors(agi: dict[str, list[dict[str, Any]]], pause: float = PAUSE,
                 marker: str = "@bench-silent-") -> list[float]:
    """End of each prompt -> the controller's next ``EXEC UserEvent IvrSilentCall``, minus
    the pause, for the silent callers' inbound channels."""
    errors = []
    for channel, evs in agi.items():
        if marker not in channel:
            continue
        prompt_end: float | None = None
        for e in evs:
            cmd = e.get("Command", "")
            if e["Event"] == "AGIExecEnd" and cmd.startswith("STREAM FILE"):
                prompt_end = _ts(e)
            elif e["Event"] == "AGIExecStart" and "IvrSilentCall" in cmd and prompt_end is not None:
                errors.append(_ts(e) - prompt_end - pause)
                prompt_end = None
            elif e["Event"] == "AGIExecStart" and cmd.startswith("STREAM FILE"):
                prompt_end = None
    return errors


def agi_latency(agi: dict[str, list[dict[str, Any]]]) -> tuple[list[float], list[float]]:
    """(round trips of quick commands, turnarounds) over every AGI session."""
    rtt, turn = [], []
    for evs in agi.values():
        last_end: float | None = None
        for e in evs:
            if e["Event"] == "AGIExecStart":
                if last_end is not None:
                    turn.append(_ts(e) - last_end)
            else:
                cmd = e.get("Command", "")
                if last_end is not None and cmd.upper().startswith(tuple(c.upper() for c in QUICK_COMMANDS)):
                    rtt.append(_ts(e) - last_end)
                last_end = _ts(e)
    return rtt, turn


def speech_latency(events: list[dict[str, Any]], agi: dict[str, list[dict[str, Any]]],
                   marker: str = "@bench-speaks-") -> dict[str, list[float]]:
    """Speaking callers heard in a pause: ChannelTalkingStart -> the end of the woken
    WAIT FOR DIGIT, and -> the responded UserEvent."""
    talking: dict[str, float] = {}
    responded: dict[str, float] = {}
    for e in events:
        chan = e.get("Channel", "")
        if marker not in chan or not chan.endswith(";1"):
            continue
        if e.get("Event") == "ChannelTalkingStart":
            talking.setdefault(chan, _ts(e))
        elif (e.get("Event") == "UserEvent" and e.get("UserEvent") == "IvrSilentCall"
              and e.get("Stage") == "responded" and e.get("From", "").startswith("pause")):
            responded[chan] = _ts(e)
    out: dict[str, list[float]] = {"wake": [], "hand_on": []}
    for chan, t_resp in responded.items():
        t_talk = talking.get(chan)
        if t_talk is None:
            continue
        out["hand_on"].append(t_resp - t_talk)
        ends = [_ts(e) for e in agi.get(chan, []) if e["Event"] == "AGIExecEnd"
                and e.get("Command", "").startswith("WAIT FOR DIGIT") and t_talk <= _ts(e) <= t_resp]
        if ends:
            out["wake"].append(ends[0] - t_talk)
    return out


def hold_errors(events: list[dict[str, Any]], agi: dict[str, list[dict[str, Any]]],
                interval: float = INTERVAL, choices_at: float = CHOICES_AT) -> dict[str, list[float]]:
    """Reminder and choices prompt starts vs. hold start + 30 s / + 60 s."""
    starts: dict[str, tuple[float, str]] = {}
    names: dict[str, str] = {}
    for e in events:
        if e.get("Event") == "UserEvent" and e.get("UserEvent") == "IvrHold" and e.get("State") == "start":
            starts[e.get("Uniqueid", "")] = (_ts(e), "")
    for channel, evs in agi.items():
        for e in evs:
            if e.get("Uniqueid") in starts:
                names[e["Uniqueid"]] = channel
    out: dict[str, list[float]] = {"reminder": [], "choices": []}
    for uid, (t0, _) in starts.items():
        for e in agi.get(names.get(uid, ""), []):
            if e["Event"] != "AGIExecStart" or not e.get("Command", "").startswith("STREAM FILE"):
                continue
            if "/hold_reminder" in e["Command"]:
                out["reminder"].append(_ts(e) - t0 - interval)
            elif "/hold_choices" in e["Command"]:
                out["choices"].append(_ts(e) - t0 - choices_at)
    return out


def baseline_errors(events: list[dict[str, Any]], interval: float = INTERVAL,
                    marker: str = "@bench-queue-listen-") -> dict[str, list[float]]:
    """app_queue's periodic announcements: join -> first, and between consecutive ones."""
    joins: dict[str, float] = {}
    talks: dict[str, list[float]] = defaultdict(list)
    for e in events:
        chan = e.get("Channel", "")
        if marker not in chan:
            continue
        base = chan.rsplit(";", 1)[0]
        if e.get("Event") == "QueueCallerJoin":
            joins[base] = _ts(e)
        elif e.get("Event") == "ChannelTalkingStart" and chan.endswith(";2"):
            talks[base].append(_ts(e))
    first, spacing = [], []
    for base, times in talks.items():
        announcements: list[float] = []
        for t in sorted(times):  # one announcement may hold several talk bursts
            if not announcements or t - announcements[-1] > interval / 3:
                announcements.append(t)
        if base in joins and announcements:
            first.append(announcements[0] - joins[base] - interval)
        spacing += [b - a - interval for a, b in itertools.pairwise(announcements)]
    return {"first": first, "spacing": spacing}


def analyse(events: list[dict[str, Any]]) -> dict[str, Any]:
    agi = agi_by_channel(events)
    rtt, turn = agi_latency(agi)
    hold = hold_errors(events, agi)
    base = baseline_errors(events)
    pauses = pause_errors(agi)
    speech = speech_latency(events, agi)
    return {
        "pause_error": summary_ms(pauses),
        "reminder_error": summary_ms(hold["reminder"] + hold["choices"]),
        "reminder_only": summary_ms(hold["reminder"]), "choices_only": summary_ms(hold["choices"]),
        "baseline_error": summary_ms(base["first"] + base["spacing"]),
        "baseline_first": summary_ms(base["first"]), "baseline_spacing": summary_ms(base["spacing"]),
        "agi_round_trip": summary_ms(rtt), "agi_turnaround": summary_ms(turn),
        "speech_wake": summary_ms(speech["wake"]), "speech_hand_on": summary_ms(speech["hand_on"]),
        "silent_calls": sum(1 for c, evs in agi.items() if "@bench-silent-" in c),
        "speaking_calls": sum(1 for c in agi if "@bench-speaks-" in c),
        "agi_commands": sum(1 for evs in agi.values() for e in evs if e["Event"] == "AGIExecStart"),
    }


# -- the run --------------------------------------------------------------------------
class Recorder:
    """An admin AMI connection keeping the filtered events (as plain dicts) and waking
    per-channel waiters on Hangup, cheaply enough for thousands of events a second."""

    def __init__(self, port: int, secret: str) -> None:
        from panoramisk import Manager

        from ivr.switch.embedded import ADMIN_USER

        self.events: list[dict[str, Any]] = []
        self.hangups: dict[str, asyncio.Future[float]] = {}
        self.bridged: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._login = asyncio.Event()
        self.manager = Manager(host="127.0.0.1", port=port, username=ADMIN_USER, secret=secret, ping_delay=3600,
                               loop=asyncio.get_running_loop(), on_login=lambda _m: self._login.set())
        self.manager.register_event("*", self._on_event)

    def _on_event(self, _m: Any, e: Any) -> None:
        d = dict(e)
        self.events.append(d)
        chan = d.get("Channel", "")
        key = chan.split("@", 1)[0]
        if d.get("Event") == "Hangup" and chan.endswith(";1"):
            fut = self.hangups.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(_ts(d))
        elif d.get("Event") == "BridgeEnter" and chan.endswith(";1"):
            fut2 = self.bridged.pop(key, None)
            if fut2 is not None and not fut2.done():
                fut2.set_result(d)

    async def connect(self) -> Recorder:
        self.manager.connect()
        await asyncio.wait_for(self._login.wait(), 10)
        for name in FILTERS:
            await self.action({"Action": "Filter", "Operation": "Add", "Filter": f"Event: {name}"})
        return self

    async def action(self, action: dict[str, Any], *, as_list: bool | None = None) -> Any:
        return await asyncio.wait_for(self.manager.send_action(dict(action), as_list=as_list), 15)

    async def add_dialplan(self, context: str, exten: str, steps: list[str]) -> None:
        for prio, step in enumerate(steps, start=1):
            app, _, rest = step.partition("(")
            await self.action({"Action": "DialplanExtensionAdd", "Context": context, "Extension": exten,
                               "Priority": str(prio), "Application": app, "ApplicationData": rest[:-1],
                               "Replace": "yes"})

    def expect_hangup(self, key: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.hangups[key] = fut
        return fut

    def expect_bridge(self, key: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.bridged[key] = fut
        return fut

    async def originate(self, channel: str, context: str, exten: str, caller_id: str = "") -> None:
        await self.action({"Action": "Originate", "Channel": channel, "Context": context, "Exten": exten,
                           "Priority": "1", "Async": "true", "Timeout": "15000",
                           **({"CallerID": caller_id} if caller_id else {})})

    async def channels(self) -> list[Any]:
        replies = await self.action({"Action": "CoreShowChannels"}, as_list=True)
        return [m for m in replies if m.get("Event") == "CoreShowChannel"]

    async def hang_up_all(self, contains: str = "@bench-") -> None:
        for ch in await self.channels():
            if contains in ch.get("Channel", ""):
                with contextlib.suppress(Exception):  # already gone
                    await self.action({"Action": "Hangup", "Channel": ch["Channel"]})

    def close(self) -> None:
        self.manager.close()


SPEECH_ONSET = 1.0  # ivr-test/caller_speech starts with 1 s of digital silence


def greeting_seconds(cfg: Path) -> float:
    """How long the greeting the controller will choose now plays (to time the speakers)."""
    from ivr.config import load_config
    from ivr.greeting import choose_greeting
    from ivr.prompts import prompt_duration

    config = load_config(cfg, env={})
    greeting = choose_greeting(datetime.now(ZoneInfo(config.switch.timezone)), config)
    build = ROOT / config.prompts.build if not Path(config.prompts.build).is_absolute() else Path(config.prompts.build)
    return sum(prompt_duration(build, greeting.language, p) for p in greeting.prompts)


async def add_dialplan(rec: Recorder, greeting: float) -> None:
    await rec.add_dialplan("bench-silent", "_s.", ["Answer()", "Wait(90)", "Hangup()"])
    for j in range(5):  # speech 0.5, 1.3, 2.1, 2.9, 3.7 s into pause 1
        wait = greeting + 0.5 + 0.8 * j - SPEECH_ONSET
        await rec.add_dialplan("bench-speaks", f"_p{j}.", [
            "Answer()", f"Wait({wait:.3f})", "Playback(ivr-test/caller_speech)", "Hangup()"])
    await rec.add_dialplan("bench-hold-caller", "_c.", ["Answer()", "Wait(300)", "Hangup()"])
    await rec.add_dialplan("bench-hold-dial", "_d.", ["Dial(Local/a${EXTEN:1}@bench-hold-agent/n)", "Hangup()"])
    await rec.add_dialplan("bench-hold-agent", "_a.", ["Answer()", "Wait(300)", "Hangup()"])
    await rec.add_dialplan("bench-queue-listen", "_q.", [
        "Answer()", "Set(TALK_DETECT(set)=1000,512)", "Wait(300)", "Hangup()"])
    await rec.add_dialplan("bench-queue", "_q.", [f"Queue({BASELINE_QUEUE},,,,300)", "Hangup()"])


@dataclass
class Usage:
    pid: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, cpu s, rss kB)

    def sample(self) -> None:
        try:
            self.samples.append((time.monotonic(), proc_cpu_seconds(self.pid), proc_rss_kb(self.pid)))
        except OSError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_controller(sw: Any, tmp: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    http = _free_port()
    cfg = tmp / "ivr.toml"
    cfg.write_text(
        f'[ami]\nhost = "127.0.0.1"\nport = {sw.ports.ami}\nusername = "ivr"\n\n'
        f'[agi]\nhost = "127.0.0.1"\nport = {sw.ports.agi}\n\n'
        f'[http]\nport = {http}\n\n[database]\nurl = "sqlite:///{tmp / "ivr.db"}"\n\n'
        f'[hold]\nmessages_dir = "{tmp / "messages"}"\n'
    )
    env = {**os.environ, "IVR_AMI_SECRET": sw.secrets().controller, "IVR_HTTP_TOKEN": TOKEN}
    log = open(tmp / "controller.log", "wb")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen([sys.executable, "-m", "ivr", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, http, cfg


async def wait_healthy(http: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"controller exited with {proc.returncode}")
            try:
                async with s.get(f"http://127.0.0.1:{http}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)  # polling the controller's own readiness, bounded
    raise RuntimeError("controller not healthy in time")


async def run_n(sw: Any, n: int, held: int, rate: float, tmp: Path) -> dict[str, Any]:
    speakers = max(5, n // 10)
    import aiohttp

    proc, http, cfg = start_controller(sw, tmp)
    usage = Usage(proc.pid)
    ast = Usage(sw.pid() or 0)
    rec: Recorder | None = None
    try:
        await wait_healthy(http, proc)
        rec = await Recorder(sw.ports.ami, sw.secrets().admin).connect()
        await add_dialplan(rec, greeting_seconds(cfg))
        usage.sample()
        ast.sample()
        idle_rss = usage.samples[-1][2]
        stop_sampling = asyncio.Event()

        async def sampler() -> None:
            while not stop_sampling.is_set():
                usage.sample()
                ast.sample()
                try:
                    await asyncio.wait_for(stop_sampling.wait(), 1.0)
                except TimeoutError:
                    pass

        sampling = asyncio.ensure_future(sampler())
        api = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        t_start = time.monotonic()
        active = [0]
        peak = [0]
        placed = [0]
        failures: list[str] = []

        async def held_call(i: int) -> None:
            bridged = rec.expect_bridge(f"Local/c{i}")
            await rec.originate(f"Local/c{i}@bench-hold-caller/n", "bench-hold-dial", f"d{i}", f"1390000{i:04d}")
            entered = await asyncio.wait_for(bridged, 15)
            call_id = entered["Linkedid"]
            for _ in range(50):  # the controller may not have seen the bridge yet
                async with api.post(f"http://127.0.0.1:{http}/api/calls/{call_id}/hold") as r:
                    if r.status == 200:
                        break
                    body = await r.text()
                await asyncio.sleep(0.1)
            else:
                failures.append(f"hold {call_id}: {body}")
                return
            t_hold = time.monotonic()
            await asyncio.sleep(max(0.0, t_hold + HOLD_FOR - time.monotonic()))
            async with api.post(f"http://127.0.0.1:{http}/api/calls/{call_id}/resume") as r:
                if r.status != 200:
                    failures.append(f"resume {call_id}: {await r.text()}")

        async def queue_caller(i: int) -> None:
            await rec.originate(f"Local/q{i}@bench-queue-listen/n", "bench-queue", f"q{i}")

        async def call_slot(i: int, speaks: bool = False) -> None:
            await asyncio.sleep(i / rate)
            k = 0
            while time.monotonic() - t_start < NEW_CALLS_UNTIL:
                key = f"Local/p{i % 5}{i}x{k}" if speaks else f"Local/s{i}x{k}"
                gone = rec.expect_hangup(key)
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                placed[0] += 1
                context = "bench-speaks" if speaks else "bench-silent"
                await rec.originate(f"{key}@{context}/n", "ivr-inbound", "s", f"138{int(speaks)}{i:03d}{k:03d}")
                try:
                    await asyncio.wait_for(gone, 60)
                except TimeoutError:
                    failures.append(f"call {key} not ended within 60 s")
                finally:
                    active[0] -= 1
                k += 1

        await asyncio.gather(*(queue_caller(i) for i in range(held)))
        holds = asyncio.gather(*(held_call(i) for i in range(held)))
        await asyncio.gather(*(call_slot(i) for i in range(n)),
                             *(call_slot(i, speaks=True) for i in range(speakers)))
        await holds
        await asyncio.sleep(max(0.0, t_start + HOLD_FOR + 4 - time.monotonic()))  # thanks, last announcement
        cpu_end = usage.samples[-1][1] if usage.samples else 0.0
        await rec.hang_up_all()
        await api.close()
        stop_sampling.set()
        await sampling
        duration = time.monotonic() - t_start
        result = analyse(rec.events)
        cpu = cpu_end - usage.samples[0][1]
        peak_rss = max(s[2] for s in usage.samples)
        ast_cpu = ast.samples[-1][1] - ast.samples[0][1] if len(ast.samples) > 1 else 0.0
        concurrent = peak[0] + 2 * held
        result.update({
            "n": n, "speaking_slots": speakers, "held_calls": held, "baseline_callers": held,
            "calls_placed": placed[0], "agi_commands_per_s": round(result["agi_commands"] / duration, 1),
            "peak_inbound_concurrent": peak[0], "duration_s": round(duration, 1), "failures": failures[:20],
            "controller": {
                "cpu_s": round(cpu, 2), "cpu_pct_avg": round(100 * cpu / duration, 1),
                "cpu_ms_per_call": round(1000 * cpu / max(placed[0] + held, 1), 1),
                "rss_idle_mb": round(idle_rss / 1024, 1), "rss_peak_mb": round(peak_rss / 1024, 1),
                "rss_kb_per_concurrent_call": round((peak_rss - idle_rss) / max(peak[0] + held, 1), 1),
            },
            "asterisk_cpu_pct_avg": round(100 * ast_cpu / duration, 1),
            "concurrent_channels_approx": concurrent,
        })
        return result
    finally:
        if rec is not None:
            rec.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="concurrent calls on the real switch vs. app_queue's own reminders")
    p.add_argument("--n", type=int, nargs="*", default=[50, 100, 200])
    p.add_argument("--quick", action="store_true", help="N = 20 only")
    p.add_argument("--rate", type=float, default=50.0, help="new silent calls per second while ramping up")
    shipped = add_transmit_silence_option(p)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    ns = [20] if args.quick else args.n
    sw = start_switch(f"bench-cc-{os.getpid()}", transmit_silence=args.transmit_silence)
    transmit_silence = args.transmit_silence or shipped  # what this run measures
    runs = []
    try:
        for n in ns:
            with tempfile.TemporaryDirectory(prefix="ivr-bench-cc-") as tmp:
                held = max(10, n // 4)
                print(f"N={n}: {held} held calls, {held} baseline queue callers ...", flush=True)
                result = asyncio.run(run_n(sw, n, held, args.rate, Path(tmp)))
                runs.append(result)
                if result["failures"]:
                    print("  failures:", *result["failures"], sep="\n    ")
    finally:
        stop_switch(sw)
    rows = []
    for r in runs:
        c = r["controller"]
        rows.append([
            r["n"], r["calls_placed"], r["held_calls"],
            f'{r["pause_error"]["p50_ms"]}/{r["pause_error"]["p99_ms"]}/{r["pause_error"]["max_ms"]}',
            f'{r["reminder_error"]["p50_ms"]}/{r["reminder_error"]["p99_ms"]}/{r["reminder_error"]["max_ms"]}',
            f'{r["baseline_error"]["p50_ms"]}/{r["baseline_error"]["p99_ms"]}/{r["baseline_error"]["max_ms"]}',
            f'{r["agi_round_trip"]["p50_ms"]}/{r["agi_round_trip"]["p99_ms"]}', r["agi_commands_per_s"],
            f'{r["speech_hand_on"]["p50_ms"]}/{r["speech_hand_on"]["p99_ms"]}/{r["speech_hand_on"]["max_ms"]}',
            c["cpu_pct_avg"], c["cpu_ms_per_call"], c["rss_kb_per_concurrent_call"], r["asterisk_cpu_pct_avg"],
        ])
    print(table(["N", "calls (silent+speaking)", "held", "pause err ms p50/p99/max", "reminder err ms p50/p99/max",
                 "app_queue err ms p50/p99/max", "AGI rtt ms p50/p99", "AGI cmd/s",
                 "speech->hand-on ms p50/p99/max", "ctl CPU %", "ctl CPU ms/call",
                 "ctl RSS kB/call", "Asterisk CPU %"], rows))
    if not args.no_save:
        name = "concurrent_calls_quick" if args.quick else "concurrent_calls"
        name += "_no_transmit_silence" if transmit_silence == "no" else ""
        results = {"runs": runs, "transmit_silence": transmit_silence == "yes",
                   "targets": {"p99_ms_at_200": 250, "vs_baseline": 1.5}}
        print(f"-> {write_results(name, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
