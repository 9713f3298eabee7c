"""A freezable TCP proxy on 127.0.0.1, put between the controller and Asterisk's AMI.

It forwards bytes both ways. :meth:`AmiProxy.freeze` stops forwarding without closing
anything (a half-open connection: the peer's writes succeed and nothing comes back), on
the connections open now and, with ``new_connections=True``, on those accepted later;
:meth:`thaw` lets the held bytes through again; :meth:`cut` closes every connection;
:meth:`refuse` closes every connection and each new one (the server is down) until
:meth:`thaw`; :meth:`hold_action` lets everything through up to the first AMI action of a
given name, and holds that action and what follows it on its connection (never delivered
unless thawed): a controller's death can be made to land just before that action.

    async with AmiProxy("127.0.0.1", ami_port) as proxy:   # proxy.port: connect here
        proxy.freeze(upstream=False)   # actions reach Asterisk, replies and events do not
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Self


@dataclass
class _Link:
    writers: list[asyncio.StreamWriter]
    up: asyncio.Event = field(default_factory=asyncio.Event)  # controller -> Asterisk flows
    down: asyncio.Event = field(default_factory=asyncio.Event)  # Asterisk -> controller flows


class AmiProxy:
    """``host`` may be a Unix socket's path (then ``port`` is not used)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._new_up = self._new_down = True
        self._refusing = False
        self._hold: tuple[bytes, asyncio.Event] | None = None

    def hold_action(self, name: str) -> asyncio.Event:
        """Hold the first ``Action: <name>`` sent to Asterisk on any connection (the bytes
        before it go through; it and everything after it on that connection wait, as
        :meth:`freeze` does). The returned event is set once it is held."""
        held = asyncio.Event()
        self._hold = (f"Action: {name}\r\n".encode(), held)
        return held

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def open_links(self) -> int:
        return len(self._links)

    def freeze(self, *, upstream: bool = True, downstream: bool = True, new_connections: bool = True) -> None:
        for link in self._links:
            if upstream:
                link.up.clear()
            if downstream:
                link.down.clear()
        if new_connections:
            self._new_up, self._new_down = not upstream, not downstream

    def refuse(self) -> None:
        """Close every connection, and each new one at once (a server that is down)."""
        self._refusing = True
        self.cut()

    def thaw(self) -> None:
        self._refusing = False
        self._new_up = self._new_down = True
        for link in self._links:
            link.up.set()
            link.down.set()

    def cut(self) -> None:
        for link in list(self._links):
            for w in link.writers:
                w.transport.abort()
        self._links.clear()

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            c_writer.transport.abort()
            return
        try:
            if str(self.target[0]).startswith("/"):  # a Unix socket (a PostgreSQL server, say)
                a_reader, a_writer = await asyncio.open_unix_connection(self.target[0])
            else:
                a_reader, a_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        link = _Link([c_writer, a_writer])
        if self._new_up:
            link.up.set()
        if self._new_down:
            link.down.set()
        self._links.append(link)
        pumps = [asyncio.create_task(self._pump(c_reader, a_writer, link.up, upstream=True)),
                 asyncio.create_task(self._pump(a_reader, c_writer, link.down))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            if link in self._links:
                self._links.remove(link)
            for w in link.writers:
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event,
                    upstream: bool = False) -> None:
        while data := await reader.read(65536):
            if upstream and self._hold is not None and not self._hold[1].is_set() \
                    and (at := data.lower().find(self._hold[0].lower())) >= 0:
                # An action ends with an empty line: its start may go through, never its end.
                writer.write(data[:at])
                await writer.drain()
                data = data[at:]
                flowing.clear()
                self._hold[1].set()
            await flowing.wait()  # frozen: hold the bytes, close nothing
            writer.write(data)
            await writer.drain()
