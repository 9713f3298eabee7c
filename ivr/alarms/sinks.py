"""Alarm sinks. Each ``emit(notice)`` returns at once: call handling never waits for a
sink, and a failing sink never breaks another one or the call."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog

from ivr.ami.connection import AmiConnection, AmiError
from ivr.errors import ConfigError
from ivr.sections import AlarmsConfig

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

    def spawn(self, coro: Any) -> None:
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


class WebhookSink:
    """POST each alarm as JSON to ``url``, with retries, from a bounded queue.

    ``emit`` never blocks: when the queue is full the oldest alarm is dropped and
    counted (``dropped``). A worker task sends one alarm at a time, retrying up to
    ``retries`` times with exponential backoff on connection errors and 5xx replies.
    """

    def __init__(self, url: str, *, queue_size: int = 1000, retries: int = 3, timeout: float = 5.0,
                 backoff: float = 0.5, headers: dict[str, str] | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alarm webhook URL {url!r} must start with http:// or https://", url=url)
        self.url = url
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
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
        assert self._session is not None
        body = json.dumps({"kind": "ring.alarm", **notice.as_dict()})
        headers = {"Content-Type": "application/json", **self.headers}
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    if resp.status < 400:
                        self.delivered += 1
                        return
                    error = f"HTTP {resp.status}"
                    if resp.status < 500:
                        break  # the receiver refuses it: retrying will not help
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
        self.failed += 1
        log.warning("alarm.webhook_failed", url=self.url, error=error, uniqueid=notice.uniqueid,
                    level=notice.level)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None


def sinks_from_config(alarms: AlarmsConfig, conn: AmiConnection | None) -> list[AlarmSink]:
    """The sinks ``[alarms]`` asks for: ``log``, ``userevent`` (needs the connection),
    ``webhook_url`` (off when empty) with its retries, queue and timeout."""
    sinks: list[AlarmSink] = []
    if alarms.log:
        sinks.append(LogSink())
    if alarms.userevent and conn is not None:
        sinks.append(AmiUserEventSink(conn))
    if alarms.webhook_url:
        sinks.append(WebhookSink(alarms.webhook_url, retries=alarms.webhook_retries,
                                 queue_size=alarms.webhook_queue, timeout=alarms.webhook_timeout))
    return sinks
