"""Shared by the call benchmarks on the real switch (``concurrent_calls.py`` with Local
channels, ``sip_calls.py`` with SIP calls): the AMI recorder, the analysis of its events
(pause, reminder, app_queue and AGI figures, all from Asterisk's own ``Timestamp``s), the
controller process, /proc sampling, holds through the HTTP API and the app_queue baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BASELINE_QUEUE, ROOT, proc_cpu_seconds, proc_rss_kb, summary_ms

PAUSE = 5.0
INTERVAL, CHOICES_AT, HOLD_FOR = 30.0, 60.0, 65.0
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


def call_figures(agi: dict[str, list[dict[str, Any]]], pauses: list[float], hold: dict[str, list[float]],
                 base: dict[str, list[float]]) -> dict[str, Any]:
    """The figures both call benchmarks report, from the AGI commands by channel and the
    pause, hold (:func:`hold_errors`) and app_queue (:func:`baseline_errors`) errors."""
    rtt, turn = agi_latency(agi)
    return {
        "pause_error": summary_ms(pauses),
        "reminder_error": summary_ms(hold["reminder"] + hold["choices"]),
        "reminder_only": summary_ms(hold["reminder"]), "choices_only": summary_ms(hold["choices"]),
        "baseline_error": summary_ms(base["first"] + base["spacing"]),
        "agi_round_trip": summary_ms(rtt), "agi_turnaround": summary_ms(turn),
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


@dataclass(frozen=True)
class HoldTiming:
    """The held calls' schedule: the shipped reminder interval and choices, resumed at 65 s
    (shorter only for a smoke run; the controller is configured to match)."""

    interval: float = INTERVAL
    choices_at: float = CHOICES_AT
    hold_for: float = HOLD_FOR

    def toml(self) -> str:
        if (self.interval, self.choices_at) == (INTERVAL, CHOICES_AT):
            return ""
        return f"reminder_interval = {self.interval}\nchoices_after = {self.choices_at}\n"


SHIPPED_HOLD = HoldTiming()


def start_controller(sw: Any, tmp: Path, hold: HoldTiming = SHIPPED_HOLD,
                     agi_sessions: int | None = None) -> tuple[subprocess.Popen[bytes], int, Path]:
    """``agi_sessions``: ``[agi] max_sessions``, sized by the run (the shipped 200 refuses
    the 201st call in the controller at once: the dialplan falls back)."""
    http = _free_port()
    cfg = tmp / "ivr.toml"
    sessions = f"max_sessions = {agi_sessions}\n" if agi_sessions else ""
    cfg.write_text(
        f'[ami]\nhost = "127.0.0.1"\nport = {sw.ports.ami}\nusername = "ivr"\n\n'
        f'[agi]\nhost = "127.0.0.1"\nport = {sw.ports.agi}\n{sessions}\n'
        f'[http]\nport = {http}\n\n[database]\nurl = "sqlite:///{tmp / "ivr.db"}"\n\n'
        f'[hold]\nmessages_dir = "{tmp / "messages"}"\n{hold.toml()}'
    )
    env = {**os.environ, "IVR_AMI_SECRET": sw.secrets().controller, "IVR_HTTP_TOKEN": TOKEN,
           "IVR_AGI_KEY": sw.secrets().agi_key}  # the switch proves itself to FastAGI with it
    with open(tmp / "controller.log", "wb") as log:  # the child keeps its own descriptor
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




def stop_controller(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sampling:
    """CPU/RSS of the controller and Asterisk (``Usage``), and of any other processes
    (``others``: name -> pid getter, CPU seconds only), sampled every second until
    :meth:`stop`."""

    def __init__(self, *usages: Usage, others: dict[str, Callable[[], int | None]] | None = None) -> None:
        self.usages, self.others = usages, others or {}
        self.cpu: dict[str, float] = dict.fromkeys(self.others, 0.0)
        self._stop = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    def sample(self) -> None:
        for u in self.usages:
            u.sample()
        for name, pid in self.others.items():
            with contextlib.suppress(OSError, TypeError):
                self.cpu[name] = proc_cpu_seconds(pid())  # type: ignore[arg-type]

    def start(self) -> Sampling:
        self.sample()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def add_baseline_dialplan(rec: Recorder) -> None:
    """app_queue's own 30 s reminder, heard by TALK_DETECT on the caller side (;2)."""
    await rec.add_dialplan("bench-queue-listen", "_q.", [
        "Answer()", "Set(TALK_DETECT(set)=1000,512)", "Wait(300)", "Hangup()"])
    await rec.add_dialplan("bench-queue", "_q.", [f"Queue({BASELINE_QUEUE},,,,300)", "Hangup()"])


async def queue_callers(rec: Recorder, n: int) -> None:
    for i in range(n):
        await rec.originate(f"Local/q{i}@bench-queue-listen/n", "bench-queue", f"q{i}")


async def agi_refused(http: int) -> dict[str, float]:
    """``ivr_agi_refused_total`` by reason, from the controller's /metrics (the log has at
    most one warning per interval and reason)."""
    import aiohttp

    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{http}/metrics",
                                                  headers={"Authorization": f"Bearer {TOKEN}"},
                                                  timeout=aiohttp.ClientTimeout(total=10)) as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("ivr_agi_refused_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def controller_log_figures(log: Path) -> dict[str, Any]:
    """What the controller's log says about its AMI link during the run: Pongs that came
    late (a busy switch, ``ami.ping_late``), and reconnects (``ami.reconnecting``)."""
    import json

    late: list[float] = []
    reconnects: list[str] = []
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if "ami.ping_late" not in line and "ami.reconnecting" not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": "ami.ping_late" if "ami.ping_late" in line else "ami.reconnecting"}
            if entry.get("event") == "ami.ping_late":
                late.append(float(entry.get("seconds", 0.0)))
            elif entry.get("event") == "ami.reconnecting":
                reconnects.append(str(entry.get("reason", "")))
    return {"ami_pongs_late": len(late), "ami_pong_late_max_s": max(late, default=None),
            "ami_reconnects": len(reconnects), "ami_reconnect_reasons": reconnects[:5]}
