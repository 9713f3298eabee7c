"""Alarm sinks: AMI UserEvent, log line, webhook with retries, a bounded queue, a signature,
no redirects and a deadline (each against a real local aiohttp server)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from ivr.alarms.sinks import (
    AmiUserEventSink,
    LogSink,
    RingAlarmNotice,
    WebhookSink,
    sinks_from_config,
    verify_webhook,
)
from ivr.ami.connection import AmiConnection
from ivr.ami.testing import FakeAmi
from ivr.errors import ConfigError
from ivr.sections import AlarmsConfig

SECRET = "webhook-test-secret-0123456789"
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
            keys = ("UserEvent", "Agent", "Channel", "Uniqueid", "Linkedid", "Rings", "Level")
            assert {k: sent[k] for k in keys} == {
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
    state: dict[str, Any] = {"fail": 0, "got": [], "raw": [], "gate": asyncio.Event()}
    state["gate"].set()

    async def handle(request: web.Request) -> web.Response:
        await state["gate"].wait()
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.Response(status=503)
        body = await request.read()
        state["got"].append(json.loads(body))
        state["raw"].append((dict(request.headers), body))
        return web.Response(status=204)

    async def moved(_request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/alarm")

    async def hang(_request: web.Request) -> web.Response:
        await asyncio.Event().wait()  # never answers
        raise AssertionError

    app = web.Application()
    app.router.add_post("/alarm", handle)
    app.router.add_post("/moved", moved)
    app.router.add_post("/hang", hang)
    server = await aiohttp_server(app, host="127.0.0.1")
    state["url"] = str(server.make_url("/alarm"))
    return state


async def test_webhook_retries_until_delivered(receiver):
    receiver["fail"] = 2
    sink = WebhookSink(receiver["url"], secret=SECRET, retries=3, backoff=0.01)
    try:
        sink.emit(NOTICE)
        await asyncio.wait_for(sink.drain(), 5)
        assert [(g["kind"], g["agent"], g["level"]) for g in receiver["got"]] == [("ring.alarm", "1001", "warning")]
        assert (sink.delivered, sink.failed) == (1, 0)
    finally:
        await sink.close()


async def test_webhook_gives_up_after_retries(receiver):
    receiver["fail"] = 10
    sink = WebhookSink(receiver["url"], secret=SECRET, retries=2, backoff=0.01)
    try:
        sink.emit(NOTICE)
        await asyncio.wait_for(sink.drain(), 5)
        assert (sink.delivered, sink.failed, receiver["fail"]) == (0, 1, 7)
    finally:
        await sink.close()


async def test_webhook_queue_is_bounded_and_emit_never_blocks(receiver):
    receiver["gate"].clear()  # the receiver hangs
    sink = WebhookSink(receiver["url"], secret=SECRET, queue_size=2, retries=0)
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
        WebhookSink("ftp://x/", secret=SECRET)
    with pytest.raises(ConfigError, match="signing secret"):
        WebhookSink("http://x/", secret="")


def test_sinks_from_config_defaults_and_webhook():
    alarms = AlarmsConfig(log=True, userevent=False, webhook_url="http://127.0.0.1:9/alarm", webhook_secret=SECRET)
    kinds = [type(s).__name__ for s in sinks_from_config(alarms, None)]
    assert kinds == ["LogSink", "WebhookSink"]


async def test_webhook_is_signed_and_the_signature_verifies(receiver):
    receiver["fail"] = 1  # a retry is signed afresh, with the same delivery id
    sink = WebhookSink(receiver["url"], secret=SECRET, retries=2, backoff=0.01)
    try:
        sink.emit(NOTICE)
        await asyncio.wait_for(sink.drain(), 5)
    finally:
        await sink.close()
    ((headers, body),) = receiver["raw"]
    assert verify_webhook(SECRET, headers, body)
    assert headers["X-Ivr-Signature"].startswith("v1=") and len(headers["X-Ivr-Signature"]) == 3 + 64
    assert json.loads(body)["delivery"]
    assert not verify_webhook("another-secret-0123456789", headers, body)
    assert not verify_webhook(SECRET, headers, body.replace(b"warning", b"critical"))
    assert not verify_webhook(SECRET, headers, body, now=time.time() + 301)  # a replay, later
    assert not verify_webhook(SECRET, {**headers, "X-Ivr-Timestamp": "x"}, body)


async def test_webhook_does_not_follow_redirects(receiver):
    sink = WebhookSink(receiver["url"].replace("/alarm", "/moved"), secret=SECRET, retries=3, backoff=0.01)
    try:
        with capture_logs() as logs:
            sink.emit(NOTICE)
            await asyncio.wait_for(sink.drain(), 5)
    finally:
        await sink.close()
    assert receiver["got"] == []  # the redirect's target never saw the alarm
    assert (sink.delivered, sink.failed) == (0, 1)
    (line,) = [e for e in logs if e["event"] == "alarm.webhook_failed"]
    assert "HTTP 307" in line["error"] and "not followed" in line["error"]


async def test_webhook_delivery_has_a_total_deadline(receiver):
    # Each attempt may take 0.3 s and there are 20 retries, but the delivery ends at 0.5 s.
    sink = WebhookSink(receiver["url"].replace("/alarm", "/hang"), secret=SECRET, retries=20, timeout=0.3,
                       deadline=0.5, backoff=0.01)
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            sink.emit(NOTICE)
            await asyncio.wait_for(sink.drain(), 5)
            took = time.monotonic() - started
    finally:
        await sink.close()
    assert 0.5 <= took < 1.5 and (sink.delivered, sink.failed) == (0, 1)
    (line,) = [e for e in logs if e["event"] == "alarm.webhook_failed"]
    assert "deadline" in line["error"]
