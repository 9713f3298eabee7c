"""The FastAGI server: one asyncio task per call, routed by the AGI script path.

Each call's handler runs in its own task, tracked so that shutdown can wait for (or
cancel) calls in progress and tests can assert that no task outlives its call.

Who may talk to it (issue 13): FastAGI has no authentication of its own, so the switch
proves itself on every session with a per-switch key that the shipped dialplan puts in
the AGI URI (``agi://host:port/inbound?ivr_key=${IVR_AGI_KEY}``; see
``asterisk/ivr-globals.conf``). A session without the right key (compared in constant
time) is refused: no command is sent, the socket is closed, a warning is logged (at most
one per interval and reason) and ``ivr_agi_refused_total{reason}`` counts it. Without a
configured key every session is refused (secure default), unless ``[agi] require_key =
false``.

Bounds (:class:`AgiLimits`): at most ``max_sessions`` authenticated sessions; at most
``max_pending`` connections still sending their header (a new one evicts the oldest, so
idle connections cannot lock the real switch out: Asterisk sends its header within a
millisecond); one deadline for the whole header; and an idle timeout on each command's
reply beyond the command's own duration (WAIT FOR DIGIT n waits n ms first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.agi.channel import (
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    AgiChannel,
    AgiError,
    AgiHangup,
    AgiRefused,
    FastAgiChannel,
    read_headers,
)
from ivr.metrics import Metrics
from ivr.netlimits import Throttled
from ivr.sections import AgiConfig

log = structlog.get_logger("ivr.agi")

Handler = Callable[[AgiChannel], Awaitable[None]]


_AGI = AgiConfig()  # the defaults below are the section's


@dataclass(frozen=True)
class AgiLimits:
    max_sessions: int = _AGI.max_sessions  # calls in the controller at once (each holds one socket)
    max_pending: int = _AGI.max_pending  # connections still in their header; more evict the oldest
    header_timeout: float = HEADER_TIMEOUT  # s for the whole AGI header
    idle_timeout: float = IDLE_TIMEOUT  # s a reply may be late beyond the command's own time


class FastAgiServer:
    def __init__(self, routes: dict[str, Handler], host: str = "127.0.0.1", port: int = 4573, *,
                 key: str | None = None, require_key: bool = True, limits: AgiLimits | None = None,
                 metrics: Metrics | None = None) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self.key = key or None
        self.require_key = require_key
        self.limits = limits or AgiLimits()
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self.calls: set[asyncio.Task[None]] = set()
        self._pending: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # in arrival order
        self._evicted: set[asyncio.Task[None]] = set()
        self.sessions = 0  # authenticated sessions now
        self.refused: dict[str, int] = {}  # reason -> count (also in metrics)
        self.accepting = True
        self.channels: set[str] = set()  # channel names in a session here (this node drives them)
        # A controller pair's standby: False = every session is answered IVR_RESULT=standby
        # and let go, so the dialplan tries the next FastAGI address (README "Controller pairs").
        self.serving: Callable[[], bool] = lambda: True
        self._throttle = Throttled()

    @classmethod
    def from_config(cls, routes: dict[str, Handler], agi: AgiConfig, *,
                    metrics: Metrics | None = None) -> FastAgiServer:
        limits = AgiLimits(max_sessions=agi.max_sessions, max_pending=agi.max_pending,
                           header_timeout=agi.header_timeout, idle_timeout=agi.idle_timeout)
        return cls(routes, agi.host, agi.port, key=agi.key or None, require_key=agi.require_key,
                   limits=limits, metrics=metrics)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        if self.require_key and self.key is None:
            log.error("fastagi.no_key", problem="no FastAGI key configured: every session is refused "
                      "and calls go to the dialplan's fallback",
                      fix="set [agi] key_file (the switch's ivr-agi-key.conf) or IVR_AGI_KEY; "
                      "[agi] require_key = false only on a development machine")
        elif not self.require_key:
            log.warning("fastagi.key_not_required", problem="any local process can pose as Asterisk")
        log.info("fastagi.listening", host=self.host, port=self.port, key_required=self.require_key,
                 max_sessions=self.limits.max_sessions)

    def _refuse(self, reason: str, peer: Any, **fields: Any) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.agi_refused.labels(reason=reason).inc()
        self._throttle.warning("fastagi.refused", reason, peer=peer, **fields)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        if len(self._pending) >= self.limits.max_pending:
            oldest = next(iter(self._pending))
            self._evicted.add(oldest)
            self._pending.pop(oldest).close()  # its header read ends at once (EOF)
            self._refuse("evicted", writer.get_extra_info("peername"))
        self._pending[task] = writer
        try:
            await self._serve(reader, writer, task)
        except asyncio.CancelledError:
            # Shutdown cancelled this call: closing the socket hands the call back to the
            # dialplan (IVR_RESULT unset -> fallback). This task is the connection's top
            # level, so it ends here rather than re-raising into asyncio's stream callback.
            log.warning("fastagi.call_cancelled", peer=writer.get_extra_info("peername"))
        finally:
            self._pending.pop(task, None)
            self.calls.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     task: asyncio.Task[None]) -> None:
        peer = writer.get_extra_info("peername")
        try:
            headers = await read_headers(reader, writer, key=self.key, require_key=self.require_key,
                                         timeout=self.limits.header_timeout)
        except AgiRefused as exc:
            self._refuse("no key configured" if self.key is None and self.require_key else "bad key",
                         peer, error=str(exc))
            return
        except (AgiError, ConnectionError) as exc:
            if task in self._evicted:  # counted once, as evicted
                return
            self._refuse("bad header", peer, error=str(exc))
            return
        finally:
            self._pending.pop(task, None)
            self._evicted.discard(task)
        if self.sessions >= self.limits.max_sessions:
            self._refuse("busy", peer, max_sessions=self.limits.max_sessions)
            return
        self.sessions += 1
        try:
            await self._call(headers, reader, writer)
        finally:
            self.sessions -= 1

    async def _call(self, headers: dict[str, str], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        channel = FastAgiChannel(headers, reader, writer, idle_timeout=self.limits.idle_timeout)
        path = channel.script.split("?", 1)[0].strip("/")
        handler = self.routes.get(path)
        bound = log.bind(uniqueid=channel.uniqueid, channel=channel.channel, route=path)
        if handler is not None and self.accepting and not self.serving():
            bound.info("fastagi.standby")
            try:
                await channel.set_variable("IVR_RESULT", "standby")
            except (AgiError, AgiHangup, ConnectionError) as exc:
                bound.info("fastagi.standby_reply_failed", error=str(exc))
            return
        if handler is None or not self.accepting:
            # Returning without IVR_RESULT sends the call to the dialplan fallback.
            bound.warning("fastagi.refused", reason="no such route" if handler is None else "shutting down")
            return
        self.channels.add(channel.channel)
        try:
            await handler(channel)
        except AgiHangup:
            bound.info("fastagi.caller_hung_up")
        except AgiError as exc:
            # The dialplan fallback takes the call on: it is never dropped.
            bound.error("fastagi.agi_error", error=str(exc))
        except Exception:  # noqa: BLE001 - any handler bug: logged in full, the dialplan fallback takes the call
            bound.exception("fastagi.handler_failed")
        finally:
            self.channels.discard(channel.channel)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no call task is running; True if idle within ``timeout`` s."""
        if self.calls:
            await asyncio.wait(set(self.calls), timeout=timeout)
        return not self.calls

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let calls in progress finish for ``grace`` s, then cancel them."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        for writer in list(self._pending.values()):  # nobody's call yet: no grace needed
            writer.close()
        if self.calls:
            _, pending = await asyncio.wait(set(self.calls), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
