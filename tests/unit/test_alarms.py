"""Alarm sinks: AMI UserEvent, log line, webhook with retries and a bounded queue."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from ivr.sections import AlarmsConfig
from ivr.alarms.sinks import AmiUserEventSink, LogSink, RingAlarmNotice, WebhookSink, sinks_from_config
from ivr.ami.connection import AmiConnection
from ivr.ami.testing import FakeAmi
from ivr.errors import ConfigError

NOTICE = RingAlarmNotice("1001", "PJSIP/1001-00000002", "100.2", "100.1", 3, "warning", at=1.0)


async def test_userevent_sink_sends_ivr_ring_alarm():
    async with FakeAmi() as fake:
        conn = AmiConnection("127.0.0.1", fake.port, "ivr", "secret")
        await conn.start()
        sink = AmiUserEventSink(conn)
        try:
            sink.emit(NOTICE)
            await fake.wait_for(lambda: fake.count("UserEvent") == 1, 2)
            sent = next(a for a in fake.actions if a["Action"] == "UserEvent")
            assert {k: sent[k] for k in ("UserEvent", "Agent", "Channel", "Uniqueid", "Linkedid", "Rings", "Level")} == {
                "UserEvent": "IvrRingAlarm", "Agent": "1001", "Channel": "PJSIP/1001-00000002",
                "Uniqueid": "100.2", "Linkedid": "100.1", "Rings": "3", "Level": "warning"}
        finally:
            await sink.close()
            await conn.close()


async def test_log_sink_writes_one_structured_line():
    with capture_logs() as logs:
        LogSink().emit(NOTICE)
        LogSink().emit(RingAlarmNotice("1001", "c", "u", "l", 6, "critical"))
    assert [(e["event"], e["log_level"], e["rings"]) for e in logs] == [
        ("ring.alarm", "warning", 3), ("ring.alarm", "error", 6)]


@pytest.fixture
async def receiver(aiohttp_server):
    state = {"fail": 0, "got": [], "gate": asyncio.Event()}
    state["gate"].set()

    async def handle(request: web.Request) -> web.Response:
        await state["gate"].wait()
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.Response(status=503)
        state["got"].append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alarm", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    state["url"] = str(server.make_url("/alarm"))
    return state


async def test_webhook_retries_until_delivered(receiver):
    receiver["fail"] = 2
    sink = WebhookSink(receiver["url"], retries=3, backoff=0.01)
    try:
        sink.emit(NOTICE)
        await asyncio.wait_for(sink.drain(), 5)
        assert [(g["kind"], g["agent"], g["level"]) for g in receiver["got"]] == [("ring.alarm", "1001", "warning")]
        assert (sink.delivered, sink.failed) == (1, 0)
    finally:
        await sink.close()


async def test_webhook_gives_up_after_retries(receiver):
    receiver["fail"] = 10
    sink = WebhookSink(receiver["url"], retries=2, backoff=0.01)
    try:
        sink.emit(NOTICE)
        await asyncio.wait_for(sink.drain(), 5)
        assert (sink.delivered, sink.failed, receiver["fail"]) == (0, 1, 7)
    finally:
        await sink.close()


async def test_webhook_queue_is_bounded_and_emit_never_blocks(receiver):
    receiver["gate"].clear()  # the receiver hangs
    sink = WebhookSink(receiver["url"], queue_size=2, retries=0)
    try:
        for rings in range(1, 6):
            sink.emit(RingAlarmNotice("1001", "c", "u", "l", rings, "warning"))
        assert sink.dropped >= 2
        receiver["gate"].set()
        await asyncio.wait_for(sink.drain(), 5)
        assert [g["rings"] for g in receiver["got"]][-2:] == [4, 5]  # the newest were kept
    finally:
        await sink.close()


def test_webhook_url_must_be_http():
    with pytest.raises(ConfigError, match="must start with http"):
        WebhookSink("ftp://x/")


def test_sinks_from_config_defaults_and_webhook():
    alarms = AlarmsConfig(log=True, userevent=False, webhook_url="http://127.0.0.1:9/alarm")
    kinds = [type(s).__name__ for s in sinks_from_config(alarms, None)]
    assert kinds == ["LogSink", "WebhookSink"]
