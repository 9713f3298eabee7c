"""The real-switch rig of the features that take a caller aside (hold, unclear line), one
for both: test_hold.py and test_unclear.py.

:func:`service_rig` runs a feature's real service on the controller's AMI user and the
switch's FastAGI port (with the switch's key), collects what it publishes on the event
bus, and, when asked, records it into call records of its own (SQLite, through the real
recorder): what ``GET /api/messages`` and ``ivr report`` read. Calls are Local channels:
:func:`place_call` originates the caller's Local channel (its ;1 half is the inbound
call, which dials the agent) and returns both parties once they share a bridge.
:func:`run_scenarios` runs a test's scenarios concurrently against the feature's HTTP
routes and reports every failure by name. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ivr.agi.server import FastAgiServer
from ivr.ami.channels import ChannelTracker
from ivr.ami.connection import AmiConnection
from ivr.events import CallEvent, EventBus
from ivr.records import CallRecorder, CallStore
from ivr.web.errors import error_middleware
from tests.fakes import BusLog
from tests.integration.amitools import AmiRecorder, ts


class AsideService(Protocol):
    @property
    def agi_routes(self) -> Any: ...

    def attach(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=AsideService)


@dataclass
class Rig(Generic[S]):
    service: S
    conn: AmiConnection
    metrics: Any
    records: CallStore | None = None
    events: Sequence[CallEvent] = field(default_factory=list)  # what the service published

    def kinds(self, call_id: str) -> list[str]:
        return [e.kind for e in self.events if e.call_id == call_id]


@contextlib.asynccontextmanager
async def service_rig(switch: Any, build: Callable[[AmiConnection, ChannelTracker, EventBus], S], metrics: Any,
                      *, records: Path | None = None) -> AsyncIterator[Rig[S]]:
    """``build(conn, tracker, bus)`` makes the service; ``records``: a directory for call
    records fed from the bus (None: no records)."""
    assert switch.embedded is not None, "these tests need the embedded switch (its controller AMI user)"
    conn = AmiConnection(switch.ami_host, switch.ami_port, "ivr", switch.embedded.secrets().controller)
    tracker, bus = ChannelTracker(), EventBus()
    tracker.attach(conn)
    service = build(conn, tracker, bus)
    service.attach()
    store = await CallStore.open(f"sqlite:///{records / 'calls.db'}") if records is not None else None
    recorder = CallRecorder(store, bus) if store is not None else None
    if recorder is not None:
        await recorder.start()
    agi = FastAgiServer(service.agi_routes, "127.0.0.1", switch.agi_port, key=switch.agi_key)
    await agi.start()
    await conn.start()
    await conn.wait_connected(10)
    events = BusLog(bus)  # subscribed now, before any call starts
    rig = Rig(service, conn, metrics, store, events)
    try:
        yield rig
    finally:
        events.close()
        await service.close()
        await agi.close(2.0)
        await conn.close()
        if recorder is not None:
            await recorder.stop()
        if store is not None:
            await store.close()


@dataclass
class Call:
    caller: str  # the caller's ;1 half: the inbound call
    uid: str
    agent: str
    agent_uid: str
    bridge: str

    @staticmethod
    def half2(name: str) -> str:
        """The far half of a Local channel (the caller's or the agent's phone)."""
        return name[:-1] + "2"


async def place_call(ami: AmiRecorder, caller: str, dial_context: str, dial_exten: str, number: str) -> Call:
    """Originate ``Local/<caller>/n`` into ``dial_context,dial_exten`` with caller id
    ``number``; the call once caller and agent share a bridge."""
    since = len(ami.events)
    await ami.originate(f"Local/{caller}/n", dial_context, dial_exten, caller_id=number)
    prefix = caller.split("@", 1)[0] + "@"
    [first] = await ami.wait_for(
        lambda e: e.event == "BridgeEnter" and e["Channel"].startswith(f"Local/{prefix}")
        and e["Channel"].endswith(";1"), timeout=10, since=since)
    bridge = first["BridgeUniqueid"]
    [agent] = await ami.wait_for(
        lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == bridge and e["Uniqueid"] != first["Uniqueid"],
        timeout=10, since=since)
    return Call(first["Channel"], first["Uniqueid"], agent["Channel"], agent["Uniqueid"], bridge)


def prompt_runs(ami: AmiRecorder, channel: str, lang: str, prompt: str) -> list[tuple[Any, float]]:
    """(its AGIExecStart, its length in s) of each STREAM FILE of ``prompt`` on ``channel``
    (to the AGIExecEnd of the same command; NaN while it has not ended)."""
    runs = []
    for start in ami.find(lambda e: e.event == "AGIExecStart" and e.get("Channel") == channel
                          and e.get("Command", "").startswith(f"STREAM FILE ivr/{lang}/{prompt} ")):
        end = ami.find(lambda e, s=start: e.event == "AGIExecEnd" and e.get("CommandId") == s.get("CommandId")
                       and e.get("Channel") == channel)
        runs.append((start, ts(end[0]) - ts(start) if end else float("nan")))
    return runs


async def redirect(ami: AmiRecorder, channel: str, context: str, exten: str = "s") -> None:
    reply = await ami.action({"Action": "Redirect", "Channel": channel, "Context": context,
                              "Exten": exten, "Priority": "1"})
    assert reply.success, reply


async def hang_up(ami: AmiRecorder, channel: str) -> None:
    await ami.action({"Action": "Hangup", "Channel": channel})


Scenario = Callable[[TestClient], Awaitable[Any]]


async def run_scenarios(ami: AmiRecorder, routes: list[web.RouteDef], scenarios: dict[str, Scenario]) -> dict[str, Any]:
    """Run ``scenarios`` (name -> scenario given an HTTP client of ``routes``) at once;
    hang up whatever they left; fail naming every scenario that failed; their results."""
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(routes)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        results = await asyncio.gather(*(run(client) for run in scenarios.values()), return_exceptions=True)
        for channel in await ami.channels():
            with contextlib.suppress(Exception):
                await hang_up(ami, channel["Channel"])
    failures = [f"{name}: {r!r}" for name, r in zip(scenarios, results, strict=True) if isinstance(r, BaseException)]
    assert not failures, "\n".join(failures)
    return dict(zip(scenarios, results, strict=True))
