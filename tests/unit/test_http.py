"""The HTTP API with aiohttp's test client: auth, filters, bad input (clear 4xx, nothing
changed), health, metrics, OpenAPI in step with the routes, the event stream, features."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Counter

from ivr.errors import IvrError
from ivr.events import CallEvent, EventBus
from ivr.http import HttpSettings, Services, build_app
from ivr.http.app import HttpServer, undocumented
from ivr.records import CallRecorder, CallStore
from tests.fakes import until

TZ = ZoneInfo("Asia/Shanghai")
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = datetime(2025, 3, 4, 10, 0, tzinfo=TZ).timestamp()  # 10:00 local on 2025-03-04

ClientMaker = Callable[..., Any]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    s = await CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
    for e in [
        CallEvent("call.arrived", "100.1", {"caller": "13800000001"}, at=DAY),
        CallEvent("ring.started", "100.1", {"agent": "1001"}, at=DAY + 2),
        CallEvent("ring.alarm", "100.1", {"agent": "1001", "level": "warning", "rings": 3}, at=DAY + 17),
        CallEvent("ring.answered", "100.1", {"agent": "1001", "rings": 4}, at=DAY + 18),
        CallEvent("call.ended", "100.1", {"hung_up_first": "agent"}, at=DAY + 400),
        CallEvent("call.arrived", "200.1", {"caller": "13800000002"}, at=DAY + 86400),
        CallEvent("ring.started", "200.1", {"agent": "1002"}, at=DAY + 86401),
        CallEvent("ring.answered", "200.1", {"agent": "1002", "rings": 1}, at=DAY + 86402),
        CallEvent("hold.start", "200.1", {}, at=DAY + 86410),
        CallEvent("callback.requested", "200.1", {"item": "cb-1", "caller_number": "13800000002"}, at=DAY + 86480),
    ]:
        await s.apply(e)
    yield s
    await s.close()


@pytest.fixture
def make_client(aiohttp_client: Any, store: CallStore) -> ClientMaker:
    async def make(token: str | None = TOKEN, **kwargs: Any) -> TestClient:
        services = kwargs.pop("services", None) or Services(
            store=store, bus=EventBus(), tz=TZ, agents={"1001": "Wang", "1002": "Li", "1003": "Zhang"},
            health={"database": store.ping}, registries=kwargs.pop("registries", [CollectorRegistry()]))
        features = kwargs.pop("features", [])
        app = build_app(services, HttpSettings(token=token, **kwargs), features)
        return await aiohttp_client(app)

    return make


async def error(resp: Any, status: int, error_id: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error_id"] == error_id and body["message"] and isinstance(body["details"], dict)
    return body


# -- auth ----------------------------------------------------------------------------------

async def test_guarded_paths_need_the_token(make_client: ClientMaker) -> None:
    client = await make_client()
    resp = await client.get("/api/calls")
    await error(resp, 401, "missing-token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    await error(await client.get("/api/calls", headers={"Authorization": "Bearer nope"}), 401, "invalid-token")
    await error(await client.get("/api/calls", headers={"Authorization": f"Basic {TOKEN}"}), 401, "missing-token")
    await error(await client.get("/api/openapi.json"), 401, "missing-token")
    assert (await client.get("/api/calls", headers=AUTH)).status == 200


async def test_public_paths_are_configurable(make_client: ClientMaker) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/metrics")).status == 200
    strict = await make_client(public=())
    await error(await strict.get("/metrics"), 401, "missing-token")
    await error(await strict.get("/healthz"), 401, "missing-token")


async def test_no_token_configured_refuses_clearly(make_client: ClientMaker) -> None:
    client = await make_client(token=None)
    body = await error(await client.get("/api/calls", headers=AUTH), 401, "auth-not-configured")
    assert "IVR_HTTP_TOKEN" in body["message"]
    assert (await client.get("/healthz")).status == 200


async def test_dashboard_sign_in_by_form_and_by_token_link(make_client: ClientMaker, store: CallStore) -> None:
    await store.apply(CallEvent("message.recorded", "200.1", {  # today's: on the dashboard
        "item": "m-today", "caller_number": "13800000002", "agent": "1002", "recorded": True, "held_seconds": 61.0}))
    client = await make_client()
    resp = await client.get("/dashboard", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert "Access token" in await (await client.get("/login")).text()
    resp = await client.post("/login", data={"token": "wrong"}, allow_redirects=False)
    assert resp.status == 401 and "Wrong token" in await resp.text()
    await error(await client.get("/dashboard?token=wrong", allow_redirects=False), 401, "invalid-token")

    resp = await client.get(f"/dashboard?token={TOKEN}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
    cookie = resp.cookies["ivr_token"]
    assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await client.get("/dashboard")  # the cookie now goes with every request
    assert page.status == 200 and "Calls in progress" in await page.text()
    snap = await (await client.get("/api/dashboard")).json()
    # The page colours a ringing call by the R1 thresholds it is given (3 and 6 rings of 5 s: cn).
    assert (snap["ring_period"], snap["warn_rings"], snap["critical_rings"]) == (5.0, 3, 6)
    assert [(c["place"], c["callback_id"], c["status"]) for c in snap["callbacks"]] == [(1, "cb-1", "open")]
    assert [(m["message_id"], m["recorded"], m["held_seconds"]) for m in snap["messages"]] == [("m-today", 1, 61.0)]

    other = await make_client()
    resp = await other.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.status == 303 and resp.cookies["ivr_token"].value == TOKEN


# -- reading records -------------------------------------------------------------------------

async def test_calls_and_filters(make_client: ClientMaker) -> None:
    client = await make_client()

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/api/calls{query}", headers=AUTH)
        assert resp.status == 200, await resp.text()
        return [c["call_id"] for c in (await resp.json())["calls"]]

    assert await ids("") == ["200.1", "100.1"]
    assert await ids("?agent=1001") == ["100.1"]
    assert await ids("?state=live") == ["200.1"]
    assert await ids("?state=hold") == ["200.1"]
    assert await ids("?state=ended") == ["100.1"]
    assert await ids("?from=2025-03-04&to=2025-03-04") == ["100.1"]
    assert await ids("?from=2025-03-05") == ["200.1"]
    assert await ids("?to=2025-03-03") == []
    assert await ids("?limit=1") == ["200.1"]

    call = await (await client.get("/api/calls/100.1", headers=AUTH)).json()
    assert (call["agent"], call["rings"], call["hung_up_first"]) == ("1001", 4, "agent")
    assert [a["rings"] for a in call["alarms"]] == [3]


@pytest.mark.parametrize(("query", "parameter"), [
    ("limit=abc", "limit"), ("limit=0", "limit"), ("limit=5000", "limit"), ("state=bogus", "state"),
    ("from=2025-13-01", "from"), ("to=yesterday", "to"), ("agent=10%2701", "agent"),
])
async def test_bad_query_parameters(make_client: ClientMaker, query: str, parameter: str) -> None:
    client = await make_client()
    body = await error(await client.get(f"/api/calls?{query}", headers=AUTH), 400, "invalid-request")
    assert body["details"]["parameter"] == parameter


async def test_reversed_or_huge_date_ranges(make_client: ClientMaker) -> None:
    client = await make_client()
    await error(await client.get("/api/agents?from=2025-03-05&to=2025-03-04", headers=AUTH), 400, "invalid-request")
    await error(await client.get("/api/alarms?from=2020-01-01&to=2025-01-01", headers=AUTH), 400, "invalid-request")


async def test_unknown_and_malformed_call_ids(make_client: ClientMaker) -> None:
    client = await make_client()
    body = await error(await client.get("/api/calls/999.9", headers=AUTH), 404, "no-such-call")
    assert body["details"] == {"call_id": "999.9"}
    await error(await client.get("/api/calls/" + "9" * 65, headers=AUTH), 400, "invalid-call-id")
    await error(await client.get("/api/calls/a%20b", headers=AUTH), 400, "invalid-call-id")
    await error(await client.get("/api/nothing", headers=AUTH), 404, "not-found")
    await error(await client.post("/api/calls", headers=AUTH), 405, "method-not-allowed")


async def test_alarms_agents_messages_callbacks(make_client: ClientMaker, store: CallStore) -> None:
    await store.apply(CallEvent("message.recorded", "100.1", {"item": "m-1", "name": "Li Lei", "agent": "1001"},
                                at=DAY + 300))
    client = await make_client()
    alarms = (await (await client.get("/api/alarms?level=warning", headers=AUTH)).json())["alarms"]
    assert [(a["call_id"], a["agent"], a["rings"]) for a in alarms] == [("100.1", "1001", 3)]
    assert (await (await client.get("/api/alarms?agent=1002", headers=AUTH)).json())["alarms"] == []

    body = await (await client.get("/api/agents?from=2025-03-04&to=2025-03-05", headers=AUTH)).json()
    figs = {a["agent"]: a for a in body["agents"]}
    assert (body["from"], body["to"]) == ("2025-03-04", "2025-03-05")
    assert set(figs) == {"1001", "1002", "1003"} and figs["1001"]["name"] == "Wang"
    assert (figs["1001"]["answered"], figs["1001"]["service_level"], figs["1001"]["agent_first_hangups"],
            figs["1001"]["long_calls"], figs["1001"]["alarms_warning"]) == (1, 0.0, 1, 1, 1)
    assert (figs["1002"]["answered"], figs["1002"]["service_level"]) == (1, 1.0)
    assert figs["1003"]["service_level"] is None

    (msg,) = (await (await client.get("/api/messages", headers=AUTH)).json())["messages"]
    assert (msg["message_id"], msg["name"], msg["for_agent"]) == ("m-1", "Li Lei", "1001")
    (cb,) = (await (await client.get("/api/callbacks?status=open", headers=AUTH)).json())["callbacks"]
    assert (cb["callback_id"], cb["phone"]) == ("cb-1", "13800000002")


# -- writing: bad input changes nothing -------------------------------------------------------

async def callback_status(store: CallStore) -> str:
    (cb,) = await store.callbacks()
    return cb["status"]


async def test_update_a_callback(make_client: ClientMaker, store: CallStore) -> None:
    client = await make_client()
    resp = await client.patch("/api/callbacks/cb-1", json={"status": "done"}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["status"] == "done"
    assert await callback_status(store) == "done"
    call = await store.call("200.1")
    assert call is not None and call["events"][-1]["kind"] == "callback.status"


@pytest.mark.parametrize(("body", "headers", "status", "error_id"), [
    (b'{"status": "done"', {"Content-Type": "application/json"}, 400, "invalid-json"),
    (b'["done"]', {"Content-Type": "application/json"}, 400, "invalid-json"),
    (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "invalid-json"),
    (b"status=done", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "invalid-json"),
    (b'{"status": "maybe"}', {"Content-Type": "application/json"}, 400, "invalid-request"),
    (b'{"status": "done", "drop": "table"}', {"Content-Type": "application/json"}, 400, "invalid-request"),
    (b'{"status": "done", "pad": "' + b"x" * 70_000 + b'"}', {"Content-Type": "application/json"}, 413,
     "body-too-large"),
])
async def test_bad_bodies_change_nothing(make_client: ClientMaker, store: CallStore, body: bytes,
                                         headers: dict[str, str], status: int, error_id: str) -> None:
    client = await make_client()
    await error(await client.patch("/api/callbacks/cb-1", data=body, headers={**AUTH, **headers}), status, error_id)
    assert await callback_status(store) == "open"


async def test_unknown_callback_and_unauthenticated_write(make_client: ClientMaker, store: CallStore) -> None:
    client = await make_client()
    await error(await client.patch("/api/callbacks/cb-9", json={"status": "done"}, headers=AUTH), 404,
                "no-such-callback")
    await error(await client.patch("/api/callbacks/cb-1", json={"status": "done"}), 401, "missing-token")
    assert await callback_status(store) == "open"


# -- health, metrics, OpenAPI -------------------------------------------------------------------

async def test_health(make_client: ClientMaker, store: CallStore) -> None:
    async def slow() -> bool:
        await asyncio.sleep(10)  # pacing: a check that never answers within the health limit
        return True

    def broken() -> bool:
        raise ConnectionError("AMI socket closed")

    ok = Services(store=store, bus=EventBus(), tz=TZ, health={"ami": lambda: True, "database": store.ping})
    body = await (await (await make_client(services=ok)).get("/healthz")).json()
    assert body == {"status": "ok", "checks": {"ami": {"ok": True}, "database": {"ok": True}}}

    bad = Services(store=store, bus=EventBus(), tz=TZ,
                   health={"ami": broken, "fastagi": lambda: False, "database": slow, "db2": store.ping})
    resp = await (await make_client(services=bad, health_timeout=0.2)).get("/healthz")
    assert resp.status == 503
    checks = (await resp.json())["checks"]
    assert checks["ami"] == {"ok": False, "error": "AMI socket closed"}
    assert checks["fastagi"] == {"ok": False}
    assert checks["database"] == {"ok": False, "error": "TimeoutError"}
    assert checks["db2"] == {"ok": True}


async def test_metrics_serve_the_given_registries(make_client: ClientMaker) -> None:
    registry = CollectorRegistry()
    Counter("ivr_test_alarms", "test counter", registry=registry).inc(3)
    resp = await (await make_client(registries=[registry])).get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert "ivr_test_alarms_total 3.0" in await resp.text()


async def test_openapi_documents_every_route(make_client: ClientMaker) -> None:
    client = await make_client()
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    assert doc["openapi"].startswith("3.")
    assert undocumented(client.app, doc) == (set(), set())
    for path in ("/healthz", "/metrics", "/api/calls", "/api/calls/{call_id}", "/api/alarms", "/api/agents",
                 "/api/messages", "/api/callbacks"):
        assert path in doc["paths"]


# -- features plug in ---------------------------------------------------------------------------

class Refused(IvrError):
    error_id = "hold-not-possible"


async def test_a_feature_plugs_in_its_documented_routes(make_client: ClientMaker) -> None:
    async def hold(request: web.Request) -> web.Response:
        raise Refused("the call is not bridged", call_id=request.match_info["call_id"])

    async def crash(_request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    paths = {"/api/calls/{call_id}/hold": {"post": {"responses": {"200": {"description": "held"}}}},
             "/api/crash": {"get": {"responses": {"200": {"description": "never"}}}}}
    client = await make_client(features=[("hold", [web.post("/api/calls/{call_id}/hold", hold),
                                                    web.get("/api/crash", crash)], paths)])
    body = await error(await client.post("/api/calls/1.2/hold", headers=AUTH), 409, "hold-not-possible")
    assert body["details"] == {"call_id": "1.2"}
    await error(await client.get("/api/crash", headers=AUTH), 500, "internal-error")
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    assert "/api/calls/{call_id}/hold" in doc["paths"]


async def test_an_undocumented_feature_route_is_refused(store: CallStore) -> None:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response()

    services = Services(store=store, bus=EventBus(), tz=TZ)
    with pytest.raises(ValueError, match=r"undocumented.*transfer"):
        build_app(services, HttpSettings(), [("transfer", [web.post("/api/calls/{call_id}/transfer", handler)], {})])
    server = HttpServer(services, HttpSettings(port=0))
    server.add_feature("x", [], {})
    await server.start()
    try:
        with pytest.raises(RuntimeError, match="before the HTTP server starts"):
            server.add_feature("late", [], {})
        assert server.port != 0 and server.url.startswith("http://127.0.0.1:")
    finally:
        await server.stop()


# -- the live event stream ------------------------------------------------------------------------

async def read_event(resp: Any, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    kind, data = "", ""
    async with asyncio.timeout(timeout):  # the whole event, not each line
        while True:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and kind:
                return kind, json.loads(data)


async def test_event_stream_sends_events_once_recorded(make_client: ClientMaker, store: CallStore) -> None:
    bus = EventBus()
    recorder = CallRecorder(store, bus)
    await recorder.start()
    try:
        client = await make_client(services=Services(store=store, bus=bus, tz=TZ, recorder=recorder))
        resp = await client.get("/api/events", headers=AUTH)
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert (await resp.content.readline()).startswith(b"retry:")
        await until(lambda: bus.subscribers == 2, 2, "the recorder and this stream subscribed")
        bus.publish(CallEvent("ring.alarm", "300.1", {"agent": "1003", "level": "critical", "rings": 6}))
        kind, data = await read_event(resp)
        assert kind == "ring.alarm" and data["agent"] == "1003" and data["rings"] == 6
        alarms = (await (await client.get("/api/alarms?agent=1003", headers=AUTH)).json())["alarms"]
        assert [a["level"] for a in alarms] == ["critical"]  # already on record when it was sent
        resp.close()
        # The stream notices the closed client at its next write, and unsubscribes.
        bus.publish(CallEvent("ring.alarm", "300.1", {"agent": "1003", "level": "critical", "rings": 7}))
        await recorder.wait_applied(2)
        await until(lambda: bus.subscribers == 1, 5, "the closed stream unsubscribed")
    finally:
        await recorder.stop()


async def test_event_stream_needs_the_token(make_client: ClientMaker) -> None:
    client = await make_client()
    await error(await client.get("/api/events"), 401, "missing-token")


async def test_without_records_the_api_says_503(make_client: ClientMaker) -> None:
    client = await make_client(services=Services(store=None, bus=EventBus(), tz=TZ))
    for path in ("/api/calls", "/api/calls/1.0", "/api/alarms", "/api/agents", "/api/dashboard"):
        await error(await client.get(path, headers=AUTH), 503, "records-unavailable")
    assert (await client.get("/healthz")).status == 200  # no checks given here
