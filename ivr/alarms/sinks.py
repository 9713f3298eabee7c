"""Alarm sinks. Each ``emit(notice)`` returns at once: call handling never waits for a
sink, and a failing sink never breaks another one or the call."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog

from ivr.ami.connection import AmiConnection, AmiError
from ivr.errors import ConfigError
from ivr.events import EventBus
from ivr.once import Once, action_key
from ivr.sections import AlarmsConfig

_ALARMS = AlarmsConfig()  # the webhook's defaults are the section's

log = structlog.get_logger("ivr.alarms")


@dataclass(frozen=True)
class RingAlarmNotice:
    """An agent's device has rung ``rings`` cadence periods without answer."""

    agent: str
    channel: str
    uniqueid: str
    linkedid: str
    rings: int
    level: str  # "warning" | "critical"
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlarmSink(Protocol):
    def emit(self, notice: RingAlarmNotice) -> None: ...

    async def close(self) -> None: ...


class _Tasks:
    """Tracked background tasks: none outlives ``close``."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class LogSink:
    """One structured log line per alarm (JSON when the controller logs JSON)."""

    def __init__(self, logger: Any = None) -> None:
        self.log = logger or log

    def emit(self, notice: RingAlarmNotice) -> None:
        method = self.log.error if notice.level == "critical" else self.log.warning
        method("ring.alarm", **notice.as_dict())

    async def close(self) -> None:
        return None


class AmiUserEventSink:
    """``UserEvent: IvrRingAlarm`` on the switch, so any AMI monitor sees the alarm.

    Sent in the background; while AMI is down it waits up to ``wait_connected`` s for the
    connection to come back, then gives up with a log line (never re-sent twice)."""

    def __init__(self, conn: AmiConnection, *, wait_connected: float = 10.0) -> None:
        self.conn = conn
        self.wait_connected = wait_connected
        self._tasks = _Tasks()
        self.sent = 0
        self.failed = 0

    def emit(self, notice: RingAlarmNotice) -> None:
        self._tasks.spawn(self._send(notice))

    async def _send(self, notice: RingAlarmNotice) -> None:
        action = {
            "Action": "UserEvent", "UserEvent": "IvrRingAlarm", "Agent": notice.agent,
            "Channel": notice.channel, "Uniqueid": notice.uniqueid, "Linkedid": notice.linkedid,
            "Rings": str(notice.rings), "Level": notice.level,
        }
        try:
            await self.conn.action(action, self.wait_connected)
            self.sent += 1
        except AmiError as exc:
            self.failed += 1
            log.warning("alarm.userevent_failed", error=str(exc), uniqueid=notice.uniqueid, level=notice.level)

    async def close(self) -> None:
        await self._tasks.close()


SIGNATURE_HEADER = "X-Ivr-Signature"
TIMESTAMP_HEADER = "X-Ivr-Timestamp"


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 over ``<timestamp>.<body>`` with the shared secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_webhook(secret: str, headers: Any, body: bytes, *, now: float | None = None,
                   tolerance: float = 300.0) -> bool:
    """What a receiver does (see README "Alarm webhook"): the timestamp is recent and the
    signature matches, compared in constant time. Dedupe on the body's ``delivery`` id to
    refuse a replay inside the tolerance too."""
    timestamp, signature = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(webhook_signature(secret, timestamp, body), signature)


class WebhookSink:
    """POST each alarm as JSON to ``url``, signed, with retries, from a bounded queue.

    ``emit`` never blocks: when the queue is full the oldest alarm is dropped and
    counted (``dropped``). A worker task sends one alarm at a time, retrying up to
    ``retries`` times with exponential backoff on connection errors and 5xx replies,
    each attempt at most ``timeout`` s and the whole delivery at most ``deadline`` s.
    Redirects are not followed (a 3xx is a failure): the alarm goes only where the
    configuration says. Every attempt carries ``X-Ivr-Timestamp`` (Unix seconds) and
    ``X-Ivr-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``; the body's
    ``delivery`` id stays the same across the retries of one alarm.
    """

    def __init__(self, url: str, *, secret: str, queue_size: int = _ALARMS.webhook_queue,
                 retries: int = _ALARMS.webhook_retries, timeout: float = _ALARMS.webhook_timeout,
                 deadline: float = _ALARMS.webhook_deadline, backoff: float = 0.5,
                 headers: dict[str, str] | None = None, session: aiohttp.ClientSession | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alarm webhook URL {url!r} must start with http:// or https://", url=url)
        if not secret:
            raise ConfigError("the alarm webhook needs a signing secret (IVR_WEBHOOK_SECRET, the "
                              "credential webhook-secret or [alarms] webhook_secret_file)", url=url)
        self.url = url
        self.secret = secret
        self.retries, self.timeout, self.deadline, self.backoff = retries, timeout, deadline, backoff
        self.headers = dict(headers or {})
        self.queue: asyncio.Queue[RingAlarmNotice] = asyncio.Queue(queue_size)
        self._session = session
        self._own_session = session is None
        self._worker: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def emit(self, notice: RingAlarmNotice) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.queue.task_done()
            self.dropped += 1
        self.queue.put_nowait(notice)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._work())

    async def drain(self) -> None:
        """Wait until every queued alarm was delivered or given up (for tests, shutdown)."""
        await self.queue.join()

    async def _work(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        while True:
            notice = await self.queue.get()
            try:
                await self._deliver(notice)
            finally:
                self.queue.task_done()

    async def _deliver(self, notice: RingAlarmNotice) -> None:
        body = json.dumps({"kind": "ring.alarm", "delivery": uuid.uuid4().hex, **notice.as_dict()}).encode()
        try:
            async with asyncio.timeout(self.deadline):
                error = await self._attempts(body)
        except TimeoutError:
            error = f"no delivery within the {self.deadline} s deadline"
        if not error:
            self.delivered += 1
            return
        self.failed += 1
        log.warning("alarm.webhook_failed", url=self.url, error=error, uniqueid=notice.uniqueid,
                    level=notice.level)

    async def _attempts(self, body: bytes) -> str:
        """Send until accepted ("") or given up (the last error)."""
        assert self._session is not None
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            stamp = str(int(time.time()))
            headers = {**self.headers, "Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
                       SIGNATURE_HEADER: webhook_signature(self.secret, stamp, body)}
            try:
                async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    if resp.status < 300:
                        return ""
                    error = f"HTTP {resp.status}"
                    if 300 <= resp.status < 400:
                        return f"{error}: redirect to {resp.headers.get('Location', '?')!r} not followed"
                    if resp.status < 500:
                        return error  # the receiver refuses it: retrying will not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
        return error

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None


def alarm_key(notice: RingAlarmNotice) -> str:
    """The alarm's :mod:`ivr.once` key: the call, ``ring``, the leg and the level."""
    return action_key(notice.linkedid or notice.uniqueid, "ring", f"{notice.uniqueid}/{notice.level}")


class RecordSink:
    """The alarm on the event bus (the call records, the dashboard), recorded by the node
    that sends it under its once key (:meth:`EventBus.keyed`): a standby whose alarm the
    old leader had sent, or that never sends it, records nothing."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def emit(self, notice: RingAlarmNotice) -> None:
        self.bus.keyed("ring.alarm", notice.linkedid or notice.uniqueid, alarm_key(notice), at=notice.at,
                       agent=notice.agent, channel=notice.channel, uniqueid=notice.uniqueid,
                       rings=notice.rings, level=notice.level)

    async def close(self) -> None:
        return None


class OnceSinks:
    """Every sink, each alarm once per switch (:class:`~ivr.once.Once`, key: the call,
    ``ring``, the leg and the level): a standby follows the calls and raises the same
    alarms; it keeps them for a takeover, and the new leader sends those the old one had
    not sent, late, at once, and no other (README "Controller pairs")."""

    def __init__(self, sinks: list[AlarmSink], once: Once) -> None:
        self.sinks, self.once = sinks, once

    def emit(self, notice: RingAlarmNotice) -> None:
        self.once.submit(alarm_key(notice), lambda: self._emit_all(notice))

    def _emit_all(self, notice: RingAlarmNotice) -> None:
        for sink in self.sinks:
            try:
                sink.emit(notice)
            except Exception:
                log.exception("ring.alarm_sink_failed", sink=type(sink).__name__)

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()


def sinks_from_config(alarms: AlarmsConfig, conn: AmiConnection | None,
                      once: Once | None = None, bus: EventBus | None = None) -> list[AlarmSink]:
    """The sinks ``[alarms]`` asks for: ``log``, ``userevent`` (needs the connection),
    ``webhook_url`` (off when empty) with its signing secret, retries, queue, timeout and
    deadline, and the records (``bus``); all behind ``once`` (each alarm once per switch)
    when that is given."""
    sinks: list[AlarmSink] = [RecordSink(bus)] if bus is not None else []
    if alarms.log:
        sinks.append(LogSink())
    if alarms.userevent and conn is not None:
        sinks.append(AmiUserEventSink(conn))
    if alarms.webhook_url:
        sinks.append(WebhookSink(alarms.webhook_url, secret=alarms.webhook_secret,
                                 retries=alarms.webhook_retries, queue_size=alarms.webhook_queue,
                                 timeout=alarms.webhook_timeout, deadline=alarms.webhook_deadline))
    if once is not None:
        return [OnceSinks(sinks, once)]
    return sinks
