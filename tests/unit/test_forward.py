"""Any node answers the API (issue 17): a standby sends a changing request to its switch's
leader (same method, path, query, body, the caller's token) and returns the answer; a
request for another switch's call goes to that switch's leader; reads stay local; a leader
that is unknown, has no address, is unreachable or answers badly gives a clear 502/503."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from ivr.events import EventBus
from ivr.http import HttpSettings, Services, build_app
from ivr.http.forward import ANSWERED_BY, FORWARDED, MAX_ANSWER, Forwarder

TOKEN = "s3cret-token-of-the-centre"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOC = {"post": {"summary": "test", "responses": {"200": {"description": "ok"}}}}


class FakeDb:
    """The two lookups the forwarder makes: the lease row of a switch, a call's switch."""

    dialect = "postgresql"

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, str] = {}

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        if "ivr_lease" in sql:
            return self.leases.get(params[0])
        if "FROM calls" in sql:
            return {"switch": self.calls[params[0]]} if params[0] in self.calls else None
        return None


def node_app(name: str, seen: list[dict[str, Any]], forwarder: Forwarder | None) -> web.Application:
    async def hold(request: web.Request) -> web.Response:
        seen.append({"node": name, "method": request.method, "path": request.path_qs,
                     "body": await request.text(), "auth": request.headers.get("Authorization"),
                     "key": request.headers.get("Idempotency-Key"), "cookie": request.headers.get("Cookie")})
        return web.json_response({"held_by": name}, status=202)

    services = Services(store=None, bus=EventBus(), tz=ZoneInfo("UTC"), registries=[CollectorRegistry()],
                        forwarder=forwarder)
    routes = [web.post("/api/calls/{call_id}/hold", hold)]
    return build_app(services, HttpSettings(token=TOKEN), [("hold", routes, {"/api/calls/{call_id}/hold": DOC})])


@pytest.fixture
async def cluster(aiohttp_client: Any, aiohttp_server: Any) -> Callable[..., Any]:
    """make(acting=..., leader_app=...) -> (standby client, seen requests, fake db, forwarder)."""
    async def make(*, acting: bool = False, leader_app: web.Application | None = None,
                   timeout: float = 2.0) -> tuple[TestClient, list[dict[str, Any]], FakeDb, Forwarder]:
        seen: list[dict[str, Any]] = []
        server: TestServer = await aiohttp_server(leader_app or node_app("a1", seen, None))
        db = FakeDb()
        db.leases["sw-a"] = {"node": "a1", "token": 7, "live": True, "api_url": f"http://127.0.0.1:{server.port}"}
        fwd = Forwarder(switch="sw-a", node="a2", advertise="http://127.0.0.1:1", acting=lambda: acting,
                        db=lambda: db, timeout=timeout)
        client = await aiohttp_client(node_app("a2", seen, fwd))
        return client, seen, db, fwd

    return make


async def test_a_standby_has_the_leader_carry_a_change_out(cluster: Callable[..., Any]) -> None:
    client, seen, _, fwd = await cluster()
    resp = await client.post("/api/calls/c-1.5/hold?for=1001", data=b'{"agent": "1001"}',
                             headers={**AUTH, "Content-Type": "application/json", "Idempotency-Key": "k-1",
                                      "Cookie": "other=1"})
    assert resp.status == 202 and await resp.json() == {"held_by": "a1"}
    assert resp.headers[ANSWERED_BY] == "a1"
    assert seen == [{"node": "a1", "method": "POST", "path": "/api/calls/c-1.5/hold?for=1001",
                     "body": '{"agent": "1001"}', "auth": f"Bearer {TOKEN}", "key": "k-1", "cookie": None}]
    assert (fwd.forwarded, fwd.failed) == (1, 0)


async def test_the_dashboard_cookie_goes_on_as_the_bearer_token(cluster: Callable[..., Any]) -> None:
    client, seen, _, _ = await cluster()
    client.session.cookie_jar.update_cookies({"ivr_token": TOKEN})
    resp = await client.post("/api/calls/c-1.5/hold")
    assert resp.status == 202 and seen[0]["auth"] == f"Bearer {TOKEN}"


async def test_the_leader_and_reads_are_served_here(cluster: Callable[..., Any]) -> None:
    client, _, _, fwd = await cluster(acting=True)
    resp = await client.post("/api/calls/c-1.5/hold", headers=AUTH)
    assert resp.status == 202 and await resp.json() == {"held_by": "a2"} and ANSWERED_BY not in resp.headers
    standby, seen2, _, _ = await cluster(acting=False)
    assert (await standby.get("/healthz")).status in (200, 503)  # a read: never forwarded
    assert (await standby.get("/api/openapi.json", headers=AUTH)).status == 200
    assert seen2 == [] and fwd.forwarded == 0


async def test_another_switchs_call_goes_to_that_switchs_leader(cluster: Callable[..., Any],
                                                                aiohttp_server: Any) -> None:
    client, seen, db, _ = await cluster(acting=True)  # the leader of sw-a ...
    b_seen: list[dict[str, Any]] = []
    b_server = await aiohttp_server(node_app("b1", b_seen, None))
    db.leases["sw-b"] = {"node": "b1", "token": 3, "live": True, "api_url": f"http://127.0.0.1:{b_server.port}/"}
    db.calls["b-9.1"] = "sw-b"  # ... asked about a call of switch B
    resp = await client.post("/api/calls/b-9.1/hold", headers=AUTH)
    assert resp.status == 202 and resp.headers[ANSWERED_BY] == "b1"
    assert [s["node"] for s in b_seen] == ["b1"] and seen == []


@pytest.mark.parametrize(("lease", "error_id", "says"), [
    (None, "leader-unknown", "has no leader now"),
    ({"node": "a1", "token": 7, "live": False, "api_url": "http://127.0.0.1:9"}, "leader-unknown", "the last was a1"),
    ({"node": "a1", "token": 7, "live": True, "api_url": None}, "leader-no-address", "publishes no API address"),
])
async def test_no_leader_to_ask_is_a_clear_503(cluster: Callable[..., Any], lease: Any, error_id: str,
                                               says: str) -> None:
    client, seen, db, fwd = await cluster()
    if lease is None:
        del db.leases["sw-a"]
    else:
        db.leases["sw-a"] = lease
    resp = await client.post("/api/calls/c-1.5/hold", headers=AUTH)
    body = await resp.json()
    assert resp.status == 503 and body["error_id"] == error_id and says in body["message"], body
    assert body["details"]["switch"] == "sw-a" and seen == [] and fwd.failed == 1


async def test_an_unreachable_leader_is_a_503_saying_where_it_is(cluster: Callable[..., Any]) -> None:
    client, _, db, _ = await cluster()
    db.leases["sw-a"]["api_url"] = "http://127.0.0.1:1"  # nothing listens there
    resp = await client.post("/api/calls/c-1.5/hold", headers=AUTH)
    body = await resp.json()
    assert resp.status == 503 and body["error_id"] == "leader-unreachable"
    assert body["details"] == {"switch": "sw-a", "leader": "a1", "api_url": "http://127.0.0.1:1", "lease_live": True}
    assert "a1 at http://127.0.0.1:1 is unreachable" in body["message"]


async def test_the_database_away_is_a_503(cluster: Callable[..., Any]) -> None:
    client, _, _, fwd = await cluster()
    fwd.db = lambda: None
    body = await (await client.post("/api/calls/c-1.5/hold", headers=AUTH)).json()
    assert body["error_id"] == "leader-unknown" and "database is away" in body["message"]


async def test_a_request_forwarded_once_is_never_forwarded_again(cluster: Callable[..., Any]) -> None:
    client, seen, _, _ = await cluster()
    resp = await client.post("/api/calls/c-1.5/hold", headers={**AUTH, FORWARDED: "a3"})
    body = await resp.json()
    assert resp.status == 503 and body["error_id"] == "not-leader" and body["details"]["leader"] == "a1"
    assert seen == []


async def test_a_large_answer_comes_back_whole(cluster: Callable[..., Any]) -> None:
    """Up to MAX_ANSWER bytes, in as many chunks as the network makes of it."""
    big = {"rows": ["r" * 100] * 5000}  # about 520 kB

    async def answer(_request: web.Request) -> web.Response:
        return web.json_response(big)

    app = web.Application()
    app.add_routes([web.post("/api/calls/{call_id}/hold", answer)])
    client, _, _, _ = await cluster(leader_app=app)
    resp = await client.post("/api/calls/c-1.5/hold", headers=AUTH)
    assert resp.status == 200 and await resp.json() == big


def hostile_leader(kind: str, hits: list[str]) -> web.Application:
    # 1 kB that would inflate to 10 MB, compressed before the request: compressing in the
    # handler took CPU inside the forwarder's 0.5-s deadline (a loaded machine: "unreachable")
    bomb = gzip.compress(b'"' + b"x" * 10_000_000 + b'"') if kind == "gzip" else b""

    async def answer(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if kind == "redirect":
            raise web.HTTPFound("/elsewhere")
        if kind == "html":
            return web.Response(text="<h1>hello</h1>", content_type="text/html")
        if kind == "gzip":
            return web.Response(body=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        if kind == "bad-json":
            return web.Response(text="{not json", content_type="application/json")
        if kind == "huge":
            return web.Response(body=b'"' + b"x" * (MAX_ANSWER + 10) + b'"', content_type="application/json")
        await asyncio.sleep(30)  # pacing: a peer that never answers within the deadline
        return web.json_response({})

    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"followed": True})

    app = web.Application()
    app.add_routes([web.post("/api/calls/{call_id}/hold", answer), web.post("/elsewhere", elsewhere),
                    web.get("/elsewhere", elsewhere)])
    return app


@pytest.mark.parametrize(("kind", "status", "error_id"), [
    ("redirect", 502, "leader-bad-answer"), ("html", 502, "leader-bad-answer"),
    ("bad-json", 502, "leader-bad-answer"), ("huge", 502, "leader-bad-answer"), ("gzip", 502, "leader-bad-answer"),
    ("slow", 503, "leader-unreachable"),
])
async def test_a_hostile_leader_answer_is_not_passed_on(cluster: Callable[..., Any], kind: str, status: int,
                                                        error_id: str) -> None:
    hits: list[str] = []
    client, _, _, _ = await cluster(leader_app=hostile_leader(kind, hits), timeout=0.5)
    resp = await client.post("/api/calls/c-1.5/hold", headers=AUTH)
    body = await resp.json()
    assert resp.status == status and body["error_id"] == error_id, body
    assert hits == ["/api/calls/c-1.5/hold"]  # a redirect is never followed
    assert "Location" not in resp.headers and json.dumps(body).count("x" * 100) == 0
