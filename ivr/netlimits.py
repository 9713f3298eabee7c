"""Bounds on what the controller's two listening servers (FastAGI and the HTTP API) may
hold, so that neither can starve the other, nor the process run out of descriptors.

* :func:`fd_budget` fits the configured connection caps under the process's
  ``RLIMIT_NOFILE`` (minus a reserve for AMI, the database, logs and accepts), so accept
  never fails with ``EMFILE`` because of connections the servers themselves keep.
* :class:`AcceptFailures` rate-limits asyncio's own report of a failed ``accept()``
  (the loop calls its exception handler once per failure: 13,875 lines in 10 s were seen
  under an fd flood) to one warning per interval, with the count.
* :class:`CappedHttpSite` is aiohttp's ``TCPSite`` with a connection cap: at the cap, the
  oldest idle connection (keep-alive, or one that never finished its request line and
  headers) is closed to make room; if none is idle, the new connection is closed at once.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("ivr.net")

RESERVE_FDS = 48  # AMI, database, log files, stdio, the listening sockets, accept headroom


def fd_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def fd_budget(agi_max: int, http_max: int, limit: int | None = None,
              reserve: int = RESERVE_FDS) -> tuple[int, int]:
    """The caps to use: the configured ones if they fit under the fd limit, else scaled
    down (FastAGI keeps two thirds of what is available: calls come first)."""
    limit = fd_limit() if limit is None else limit
    room = max(limit - reserve, 4)
    if agi_max + http_max <= room:
        return agi_max, http_max
    agi = max(min(agi_max, room * 2 // 3), 2)
    http = max(min(http_max, room - agi), 1)
    log.warning("net.caps_lowered", fd_limit=limit, agi_max_sessions=agi, http_max_connections=http,
                hint="raise LimitNOFILE (deploy/ivr.service) or lower the caps")
    return agi, http


def split_agi(agi_max: int, sessions: int, pending: int) -> tuple[int, int]:
    """``agi_max`` FastAGI sockets (:func:`fd_budget`'s share) split between calls
    (``max_sessions``) and connections still in their header (``max_pending``): as
    configured when they fit, else both scaled down in proportion, so idle connections
    can never hold more than their share of the descriptors (calls keep the rest)."""
    if sessions + pending <= agi_max:
        return sessions, pending
    share = max(1, agi_max * pending // (sessions + pending))
    return max(agi_max - share, 1), share


class AcceptFailures:
    """Loop exception handler that folds failed ``accept()`` reports into one warning per
    ``interval`` s (with how many there were); everything else goes to the previous
    handler unchanged."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.count = 0  # failures since the last warning
        self.total = 0
        self._last = -float("inf")
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)
        self._loop = None

    @staticmethod
    def is_accept_failure(context: dict[str, Any]) -> bool:
        """asyncio's "socket.accept() out of system resource", and the retries it
        schedules: on EMFILE its accept loop schedules one ``_start_serving`` per failed
        accept (up to the backlog each round), and those fail again, or on a closed server
        raise "Invalid file descriptor" (measured without the caps: 15,673 tracebacks)."""
        message = str(context.get("message", ""))
        if "accept" in message.lower() and isinstance(context.get("exception"), OSError):
            return True
        # asyncio's own objects (a Handle's private _callback), not ours: read by name, with a default.
        callback = getattr(context.get("handle"), "_callback", None)
        return getattr(callback, "__name__", "") == "_start_serving"

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not self.is_accept_failure(context):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.count += 1
        self.total += 1
        now = self.clock()
        if now - self._last >= self.interval:
            exc = context.get("exception")
            log.warning("net.accept_failed", count=self.count, total=self.total,
                        error=f"{type(exc).__name__}: {exc}", interval=self.interval)
            self._last, self.count = now, 0


class CappedHttpSite(web.TCPSite):
    """``TCPSite`` whose server holds at most ``max_connections`` connections."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int,
                 on_refused: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.max_connections = max_connections
        self.on_refused = on_refused or (lambda _why: None)
        self.refused = 0
        self.evicted = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)  # what TCPSite.start does, with a capped factory
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self._factory(server), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    def _factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            handlers = server.connections
            if len(handlers) >= self.max_connections:
                # aiohttp's private flag on its RequestHandler (not ours): busy when it is missing.
                idle = [h for h in handlers if not getattr(h, "_request_in_progress", True)]
                if idle:  # oldest first (the server keeps them in connection order)
                    idle[0].force_close()
                    self.evicted += 1
                    self.on_refused("evicted")
                else:
                    self.refused += 1
                    self.on_refused("refused")
                    return _Refuse()
            return server()
        return make


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Throttled:
    """One log line per ``interval`` s per (event, reason), with how many were folded in:
    what a stray process can make happen at will must not flood the log."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._folded: dict[tuple[str, str], int] = {}

    def warning(self, event: str, reason: str, **fields: Any) -> bool:
        key = (event, reason)
        now = self.clock()
        if now - self._last.get(key, -float("inf")) < self.interval:
            self._folded[key] = self._folded.get(key, 0) + 1
            return False
        if len(self._last) > 256:  # reasons are few; never grow without bound
            self._last.clear()
            self._folded.clear()
        self._last[key] = now
        folded = self._folded.pop(key, 0)
        log.warning(event, reason=reason, **({"also_since_last": folded} if folded else {}), **fields)
        return True
