"""POST /api/callbacks (issue 18): a call-back asked for through the API. Hostile bodies
get a 400 naming the field; a duplicate merges into the open call-back (its place kept);
the window asked for is stored with its opening; a queue target must be one the switch has."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from ivr.callbacks.http import CALLBACK_OPENAPI, callback_routes
from ivr.events import CallEvent
from ivr.http.app import undocumented
from ivr.records.figures import day_figures
from ivr.records.queries import CallFilter
from ivr.web.errors import error_middleware
from tests.unit.test_callback_service import NOON, TZ, world  # noqa: F401  (fixture)


def queue_status(action: dict[str, Any]) -> list[dict[str, str]]:
    """The switch knows queue "support" (members 1001, and 1002 paused)."""
    done = {"Event": "QueueStatusComplete"}
    if action["Queue"] != "support":
        return [{"Response": "Success"}, done]
    return [{"Response": "Success"}, {"Event": "QueueParams", "Queue": "support"},
            {"Event": "QueueMember", "Queue": "support", "Interface": "PJSIP/1001", "MemberName": "One", "Paused": "0"},
            {"Event": "QueueMember", "Queue": "support", "Interface": "Local/1002@agents/n", "Paused": "1"}, done]


@pytest.fixture
async def client(world: Any, aiohttp_client: Any) -> Any:  # noqa: F811
    service, ami, *_ = world
    ami.replies["QueueStatus"] = queue_status
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(callback_routes(service))
    assert undocumented(app, {"paths": CALLBACK_OPENAPI}) == (set(), set())
    return await aiohttp_client(app)


async def post(client: Any, body: Any, raw: bool = False) -> tuple[int, Any]:
    reply = await (client.post("/api/callbacks", data=body, headers={"Content-Type": "application/json"})
                   if raw else client.post("/api/callbacks", json=body))
    return reply.status, await reply.json()


@pytest.mark.parametrize(("body", "field", "words"), [
    ({}, "phone", "phone number"),
    ({"phone": 13900000001}, "phone", "phone number"),
    ({"phone": "139 0000 0001"}, "phone", "phone number"),
    ({"phone": "1390000000\r\nAction: Originate"}, "phone", "phone number"),
    ({"phone": "+" + "1" * 21}, "phone", "phone number"),
    ({"phone": "*21#"}, "phone", "phone number"),
    ({"phone": "13900000001", "target": "9999"}, "target", "configured agent"),
    ({"phone": "13900000001", "target": "queue:nope"}, "target", "no queue 'nope'"),
    ({"phone": "13900000001", "target": "queue:a;b"}, "target", "an agent number or queue:NAME"),
    ({"phone": "13900000001", "target": ["1001"]}, "target", "an agent number or queue:NAME"),
    ({"phone": "13900000001", "best_time": "whenever"}, "best_time", "'asap'"),
    ({"phone": "13900000001", "best_time": "18:00-09:00"}, "best_time", "end must be after"),
    ({"phone": "13900000001", "best_time": "25:00-26:00"}, "best_time", "not a time"),
    ({"phone": "13900000001", "best_time": None}, "best_time", "asap"),
    ({"phone": "13900000001", "held_by": "alice"}, "held_by", "agent number"),
    ({"phone": "13900000001", "held_by": "4242"}, "held_by", "no agent '4242'"),
    ({"phone": "13900000001", "call_id": "../etc"}, "call_id", "a call id"),
    ({"phone": "13900000001", "call_id": "no-such-call"}, "call_id", "no call 'no-such-call' on record"),
])
async def test_hostile_bodies_are_refused_naming_the_field(client: Any, world: Any, body: Any, field: str,  # noqa: F811
                                                           words: str) -> None:
    _, ami, store, *_ = world
    status, reply = await post(client, body)
    assert status == 400, reply
    assert field in reply["message"] and words in reply["message"], reply
    assert not await store.queue.open(), "nothing stored"
    assert not ami.sent("Originate")


async def test_not_json_unknown_fields_and_non_objects(client: Any) -> None:
    for raw in (b"[1]", b"{", b'{"phone": NaN}', b"\xff"):
        status, reply = await post(client, raw, raw=True)
        assert (status, reply["error_id"]) == (400, "invalid-json"), raw
    status, reply = await post(client, {"phone": "13900000001", "status": "done"})
    assert status == 400 and "'status'" in reply["message"] and reply["details"]["fields"] == ["status"]


async def test_created_then_a_duplicate_merges_keeping_its_place(client: Any, world: Any) -> None:  # noqa: F811
    _, _, store, wall, _ = world
    status, first = await post(client, {"phone": "+8613900000001", "target": "1001", "held_by": "1002"})
    assert status == 201
    assert (first["phone"], first["target"], first["best_time"], first["held_by"], first["status"]) == (
        "+8613900000001", "1001", "today", "1002", "open")
    assert first["next_attempt"] == NOON and first["call_id"].startswith("api-")
    wall.t = NOON + 60
    status, again = await post(client, {"phone": "+8613900000001", "target": "1001",
                                        "best_time": "tomorrow 09:00-12:00"})
    assert status == 200
    assert (again["callback_id"], again["at"], again["requests"]) == (first["callback_id"], NOON, 2)
    assert again["best_time"] == "09:00-12:00"
    assert again["next_attempt"] == datetime(2026, 12, 2, 9, 0, tzinfo=TZ).timestamp()
    # the request is no call: the daily figures do not count it
    call = await store.call(first["call_id"])
    assert call["state"] == "callback-request" and call["ended_at"] == NOON
    days = day_figures(legs=[], calls=await store.calls(CallFilter()), holds=[], tz=TZ)
    assert sum(d["calls"] for d in days) == 0
    assert [e["kind"] for e in call["events"]] == ["callback.requested"]  # the first request's record


async def test_a_queue_target_the_switch_has_and_an_existing_call(client: Any, world: Any) -> None:  # noqa: F811
    _, ami, store, *_ = world
    status, row = await post(client, {"phone": "13900000002", "target": "queue:support", "best_time": "14:30-16:00"})
    assert status == 201 and (row["target"], row["best_time"]) == ("queue:support", "14:30-16:00")
    assert row["next_attempt"] == datetime(2026, 12, 1, 14, 30, tzinfo=TZ).timestamp()
    assert ami.sent("QueueStatus")[-1]["Queue"] == "support"
    await store.apply(CallEvent("call.arrived", "call-7", {"caller": "13900000003"}, at=NOON - 100))
    status, row = await post(client, {"phone": "13900000003", "call_id": "call-7"})
    assert status == 201 and row["call_id"] == "call-7"
