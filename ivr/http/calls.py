"""Read the call records over HTTP: calls, alarms, agents' figures, messages, call-backs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from ivr.http.keys import SERVICES
from ivr.http.services import Services
from ivr.records import CallFilter
from ivr.records.figures import agent_figures, day_window
from ivr.records.store import LIVE_STATES
from ivr.web.errors import BadRequest, NotFound
from ivr.web.params import (
    json_body,
    parse_day,
    path_id,
    query_choice,
    query_int,
    query_switch,
    query_text,
)

CALL_STATES = (*LIVE_STATES, "ended", "live")
CALLBACK_STATUSES = ("open", "dialling", "done", "failed", "cancelled", "expired", "merged")
CALLBACK_SETTABLE = ("open", "done", "failed", "cancelled")  # by hand; the scheduler sets the rest


def query_window(request: web.Request, tz: ZoneInfo, *,
                 default_today: bool) -> tuple[float | None, float | None, dict[str, str]]:
    """``from`` / ``to`` (local dates, inclusive): the epoch window and the dates used."""
    raw_from, raw_to = request.query.get("from"), request.query.get("to")
    if raw_from is None and raw_to is None and not default_today:
        return None, None, {}
    today = datetime.now(tz).date()
    first = parse_day(raw_from, "from") if raw_from else None
    last = parse_day(raw_to, "to") if raw_to else None
    first = first or last or today
    last = last or first
    if last < first:
        raise BadRequest("to is before from", details={"from": first.isoformat(), "to": last.isoformat()})
    if (last - first).days > 366:
        raise BadRequest("at most 367 days at a time",
                         details={"from": first.isoformat(), "to": last.isoformat()})
    since, until = day_window(first, last, tz)
    return since, until, {"from": first.isoformat(), "to": last.isoformat()}


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def list_calls(request: web.Request) -> web.Response:
    s = _services(request)
    since, until, window = query_window(request, s.tz, default_today=False)
    f = CallFilter(agent=query_text(request, "agent"), state=query_choice(request, "state", CALL_STATES),
                   since=since, until=until, limit=query_int(request, "limit", 100, 1, 1000),
                   switch=query_switch(request))
    return web.json_response({"calls": await s.records.calls(f), **window})


async def get_call(request: web.Request) -> web.Response:
    call_id = path_id(request, "call_id", "call")
    call = await _services(request).records.call(call_id)
    if call is None:
        raise NotFound(f"no call {call_id}", error_id="no-such-call", call_id=call_id)
    return web.json_response(call)


async def list_alarms(request: web.Request) -> web.Response:
    s = _services(request)
    since, until, window = query_window(request, s.tz, default_today=False)
    rows = await s.records.alarms(since, until, agent=query_text(request, "agent"),
                                level=query_choice(request, "level", ("warning", "critical")),
                                limit=query_int(request, "limit", 100, 1, 1000), switch=query_switch(request))
    return web.json_response({"alarms": rows, **window})


async def figures_for(s: Services, since: float | None, until: float | None,
                      switch: str | None = None) -> list[dict[str, Any]]:
    """Each agent's figures (of one switch's calls when ``switch`` is given)."""
    r = s.records
    return agent_figures(
        legs=await r.ring_legs(since, until, switch), calls=await r.ended_calls(since, until, switch)
        + await r.calls(CallFilter(state="live", since=since, until=until, limit=10_000, switch=switch)),
        alarms=await r.alarms(since, until, limit=1_000_000, switch=switch),
        transfers=await r.transfers(since, until, switch), names=s.agents,
        long_call_seconds=s.long_call_seconds,
    )


async def list_agents(request: web.Request) -> web.Response:
    s = _services(request)
    since, until, window = query_window(request, s.tz, default_today=True)
    switch = query_switch(request)
    return web.json_response({"agents": await figures_for(s, since, until, switch), **window,
                              **({"switch": switch} if switch else {}),
                              "long_call_seconds": s.long_call_seconds})


async def list_messages(request: web.Request) -> web.Response:
    s = _services(request)
    since, until, window = query_window(request, s.tz, default_today=False)
    rows = await s.records.messages(since, until, agent=query_text(request, "agent"),
                                  limit=query_int(request, "limit", 100, 1, 1000), switch=query_switch(request))
    return web.json_response({"messages": rows, **window})


async def list_callbacks(request: web.Request) -> web.Response:
    s = _services(request)
    since, until, window = query_window(request, s.tz, default_today=False)
    rows = await s.records.callbacks(since, until, status=query_choice(request, "status", CALLBACK_STATUSES),
                                   limit=query_int(request, "limit", 100, 1, 1000), switch=query_switch(request))
    return web.json_response({"callbacks": rows, **window})


async def update_callback(request: web.Request) -> web.Response:
    callback_id = path_id(request, "callback_id", "callback")
    body = await json_body(request)
    unknown = sorted(set(body) - {"status"})
    if unknown:
        raise BadRequest("unknown fields", fields=unknown)
    status = body.get("status")
    if status not in CALLBACK_SETTABLE:
        raise BadRequest(f"status must be one of {', '.join(CALLBACK_SETTABLE)}", field="status",
                         value=str(status)[:100])
    row = await _services(request).records.set_callback_status(callback_id, status)
    if row is None:
        raise NotFound(f"no call-back request {callback_id}", error_id="no-such-callback",
                       callback_id=callback_id)
    return web.json_response(row)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/calls", list_calls),
        web.get("/api/calls/{call_id}", get_call),
        web.get("/api/alarms", list_alarms),
        web.get("/api/agents", list_agents),
        web.get("/api/messages", list_messages),
        web.get("/api/callbacks", list_callbacks),
        web.patch("/api/callbacks/{callback_id}", update_callback),
    ]
