"""The live dashboard: one HTML page (no build step), its snapshot API and a
server-sent-events stream of the controller's call events.

The page loads ``/api/dashboard`` once, then listens to ``/api/events``: every event
updates the page (an alarm is shown from the event itself; the tables are reloaded from
the snapshot, which is event-driven, not a polling loop). A one-second timer only
re-renders the running counters (rings, seconds on hold) from the times it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from importlib import resources
from typing import Any

from aiohttp import web

from ivr.events import CallEvent
from ivr.http.calls import figures_for
from ivr.http.keys import SERVICES, STREAMS
from ivr.http.services import Services
from ivr.records import CallFilter
from ivr.records.figures import day_window, today_summary
from ivr.web.params import query_switch

STATIC = resources.files("ivr.http").joinpath("static")
HEARTBEAT = 15.0  # seconds between SSE comments, so a dead client is noticed


async def page(_request: web.Request) -> web.Response:
    return web.Response(text=STATIC.joinpath("dashboard.html").read_text(encoding="utf-8"),
                        content_type="text/html", headers={"Cache-Control": "no-store"})


async def root(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard")


async def snapshot(request: web.Request) -> web.Response:
    s: Services = request.app[SERVICES]
    now = datetime.now(s.tz)
    since, until = day_window(now.date(), now.date(), s.tz)
    switch = query_switch(request)  # one switch's calls (issue 17); every switch's by default
    r = s.records
    live = await r.calls(CallFilter(state="live", limit=500, switch=switch))
    alarms = await r.alarms(since, until, limit=50, switch=switch)
    today = today_summary(holds=await r.holds(since, until, switch), transfers=await r.transfers(since, until, switch),
                          calls=await r.calls(CallFilter(since=since, until=until, limit=100_000, switch=switch)),
                          hold_limit=s.hold_limit)
    return web.json_response({
        "now": time.time(), "day": now.date().isoformat(), "timezone": str(s.tz), "ring_period": s.ring_period,
        "warn_rings": s.warn_rings, "critical_rings": s.critical_rings, "long_call_seconds": s.long_call_seconds,
        "hold_limit": s.hold_limit, "live": live, "alarms": alarms, "today": today,
        "agents": await figures_for(s, since, until, switch),
        "switch": s.switch, "switches": await r.switches(), "filter": switch,
        "role": s.status["role"]() if "role" in s.status else "leader",
        # Messages left today by held callers: the call records, their one store.
        "messages": await r.messages(since, until, limit=50, switch=switch),
        "callbacks": await _callbacks(s, switch),
    })


async def _callbacks(s: Services, switch: str | None) -> list[dict[str, Any]]:
    """Pending call-backs in their place in line (issue 18), with the next attempt: this
    switch's from the call-back feature when the app registered it (next attempt within
    hours); the other switches' from the records, each switch's line numbered on its own."""
    mine: list[dict[str, Any]] = []
    if switch in (None, s.switch):
        mine = await s.extra["callbacks"]() if "callbacks" in s.extra \
            else [{**r, "place": i} for i, r in enumerate(await s.records.queue.open(), 1)]
    places: dict[str, int] = {}
    others = []
    for row in await s.records.queue.open_elsewhere(switch):
        places[row["switch"]] = places.get(row["switch"], 0) + 1
        others.append({**row, "place": places[row["switch"]]})
    return [*mine, *others]


async def events(request: web.Request) -> web.StreamResponse:
    """``text/event-stream`` of call events (``event: <kind>``, ``data: <json>``)."""
    s: Services = request.app[SERVICES]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None  # a request handler runs in a task
    streams = request.app[STREAMS]
    streams.add(task)
    subscription = s.bus.subscribe()
    pending: asyncio.Task[CallEvent] | None = None
    try:
        await response.write(b"retry: 2000\n: connected\n\n")
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(subscription))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT)
            if not done:
                await response.write(b": heartbeat\n\n")
                continue
            event = pending.result()
            pending = None
            if s.recorder is not None:
                await s.recorder.handled(event)
            data = json.dumps(event.as_dict(), default=str)
            await response.write(f"event: {event.kind}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await subscription.aclose()
        streams.discard(task)
    return response


async def close_streams(app: web.Application) -> None:
    """On shutdown: end the open event streams (browsers reconnect to the next server)."""
    tasks: set[asyncio.Task[Any]] = app[STREAMS]
    for task in list(tasks):
        task.cancel()


def routes() -> list[web.AbstractRouteDef]:
    return [
        web.get("/", root),
        web.get("/dashboard", page),
        web.get("/api/dashboard", snapshot),
        web.get("/api/events", events),
        web.static("/static", str(STATIC)),
    ]
