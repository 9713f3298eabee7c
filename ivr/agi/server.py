"""The FastAGI server: one asyncio task per call, routed by the AGI script path.

Each call's handler runs in its own task, tracked so that shutdown can wait for (or
cancel) calls in progress and tests can assert that no task outlives its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from ivr.agi.channel import AgiChannel, AgiError, AgiHangup, read_headers

log = structlog.get_logger("ivr.agi")

Handler = Callable[[AgiChannel], Awaitable[None]]


class FastAgiServer:
    def __init__(self, routes: dict[str, Handler], host: str = "127.0.0.1", port: int = 4573) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self.calls: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.channels: set[str] = set()  # channel names in a session here (this node drives them)
        # A controller pair's standby: False = every session is answered IVR_RESULT=standby
        # and let go, so the dialplan tries the next FastAGI address (README "Controller pairs").
        self.serving: Callable[[], bool] = lambda: True

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        log.info("fastagi.listening", host=self.host, port=self.port)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Shutdown cancelled this call: closing the socket hands the call back to the
            # dialplan (IVR_RESULT unset -> fallback). This task is the connection's top
            # level, so it ends here rather than re-raising into asyncio's stream callback.
            log.warning("fastagi.call_cancelled", peer=writer.get_extra_info("peername"))
        finally:
            self.calls.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            headers = await read_headers(reader)
        except (AgiError, asyncio.TimeoutError, ConnectionError) as exc:
            log.warning("fastagi.bad_request", peer=writer.get_extra_info("peername"), error=str(exc))
            return
        channel = AgiChannel(headers, reader, writer)
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
        except Exception:
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
        if self.calls:
            _, pending = await asyncio.wait(set(self.calls), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
