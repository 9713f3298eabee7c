"""An in-memory AMI server on 127.0.0.1 for unit tests: speaks enough of the protocol
(banner, Login, Ping, event lists, events) to test reconnects, half-open sockets and
action handling in milliseconds, with no Asterisk.

    async with FakeAmi(secret="s") as ami:
        conn = AmiConnection("127.0.0.1", ami.port, "ivr", "s")
        ...
        ami.event({"Event": "Newchannel", "Uniqueid": "1.1", ...})
        ami.drop()            # every client socket closes
        ami.mute("Ping")      # half-open: pings get no reply
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Self

Reply = dict[str, str] | list[dict[str, str]] | None


class LiveChannels:
    """The channels a fake switch has, for AMI ``Status`` (what
    :func:`ivr.ami.confirm.hang_up_confirmed` asks before a hang-up): learnt from the
    events a test sends (a channel appears with its first event, ``Dest*`` fields of Dial
    events included; ``Hangup`` removes it), from ``Originate`` with a ``ChannelId``, and
    gone when hung up by an action. A *forged* event (``learn=False``) changes nothing:
    that is the point of asking the switch."""

    def __init__(self, rows: list[dict[str, str]] | tuple[dict[str, str], ...] = ()) -> None:
        self.rows: dict[str, dict[str, str]] = {}
        for row in rows:
            self.add(row["Uniqueid"], row.get("Channel", ""), row.get("Linkedid", row["Uniqueid"]))

    def add(self, uniqueid: str, channel: str, linkedid: str = "") -> None:
        if uniqueid and uniqueid not in self.rows:
            self.rows[uniqueid] = {"Uniqueid": uniqueid, "Channel": channel or uniqueid,
                                   "Linkedid": linkedid or uniqueid, "ChannelStateDesc": "Up"}

    def learn(self, fields: dict[str, str]) -> None:
        if fields.get("Event") == "Hangup":
            self.rows.pop(fields.get("Uniqueid", ""), None)
            return
        self.add(fields.get("Uniqueid", ""), fields.get("Channel", ""), fields.get("Linkedid", ""))
        self.add(fields.get("DestUniqueid", ""), fields.get("DestChannel", ""),
                 fields.get("DestLinkedid", "") or fields.get("Linkedid", ""))

    def find(self, channel: str) -> dict[str, str] | None:
        return self.rows.get(channel) or next((r for r in self.rows.values() if r["Channel"] == channel), None)

    def act(self, action: dict[str, str]) -> Reply:
        """The reply to ``Status``; side effects of ``Hangup`` and ``Originate``. None:
        not an action this model answers."""
        name = action.get("Action", "").lower()
        if name == "originate" and action.get("ChannelId"):
            self.add(action["ChannelId"], action.get("Channel", ""), action["ChannelId"])
        if name == "hangup":
            row = self.find(action.get("Channel", ""))
            if row is not None:
                self.rows.pop(row["Uniqueid"], None)
            return None
        if name != "status":
            return None
        row = self.find(action.get("Channel", ""))
        if row is None:
            return {"Response": "Error", "Message": "No such channel"}
        return [{"Response": "Success", "EventList": "start", "Message": "Channel status will follow"},
                {"Event": "Status", **row},
                {"Event": "StatusComplete", "EventList": "Complete", "ListItems": "1"}]
Handler = Callable[[dict[str, str]], Reply]


class FakeAmi:
    def __init__(self, username: str = "ivr", secret: str = "secret") -> None:  # noqa: S107 - the in-memory test server's login
        self.username, self.secret = username, secret
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.actions: list[dict[str, str]] = []
        self.logins = 0
        self.muted: set[str] = set()
        self.handlers: dict[str, Handler] = {}
        self.channels: list[dict[str, str]] = []  # rows for CoreShowChannels
        self.live = LiveChannels()  # what Status answers (learnt from the events sent)
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- control --------------------------------------------------------------------
    def mute(self, *actions: str) -> None:
        """Never reply to these actions (a half-open socket when it is Ping)."""
        self.muted.update(a.lower() for a in actions)

    def unmute(self) -> None:
        self.muted.clear()

    def drop(self) -> None:
        """Close every client connection (as when Asterisk restarts)."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    @property
    def clients(self) -> int:
        return len(self._writers)

    def event(self, fields: dict[str, str], *, learn: bool = True) -> None:
        """Send an event to every logged-in client (``learn=False``: a forged one, which
        the switch's own state does not follow)."""
        if learn:
            self.live.learn(fields)
        for writer in list(self._writers):
            self._write(writer, fields)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.get("Action", "").lower() == action.lower())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    # -- protocol -------------------------------------------------------------------
    @staticmethod
    def _write(writer: asyncio.StreamWriter, fields: dict[str, str]) -> None:
        if writer.is_closing():
            return
        text = "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        writer.write(text.encode())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        logged_in = False
        try:
            while True:
                action = await self._read(reader)
                if action is None:
                    return
                name = action.get("Action", "").lower()
                async with self._changed:
                    self.actions.append(action)
                    if name == "login":
                        ok = action.get("Username") == self.username and action.get("Secret") == self.secret
                        if ok:
                            self.logins += 1
                            logged_in = True
                            self._writers.append(writer)
                        self._changed.notify_all()
                    else:
                        self._changed.notify_all()
                if name in self.muted:
                    continue
                aid = {"ActionID": action.get("ActionID", "")}
                if name == "login":
                    msg = "Authentication accepted" if logged_in else "Authentication failed"
                    self._write(writer, {"Response": "Success" if logged_in else "Error", **aid, "Message": msg})
                    if not logged_in:
                        return
                    continue
                if not logged_in:
                    self._write(writer, {"Response": "Error", **aid, "Message": "Permission denied"})
                    continue
                reply = self._reply(name, action)
                for fields in reply if isinstance(reply, list) else [reply] if reply else []:
                    self._write(writer, {**fields, **aid})
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._tasks.discard(task)
            if writer in self._writers:
                self._writers.remove(writer)
            writer.close()

    def _reply(self, name: str, action: dict[str, str]) -> Reply:
        if name in self.handlers:
            return self.handlers[name](action)
        live = self.live.act(action)
        if live is not None:
            return live
        if name == "ping":
            return {"Response": "Success", "Ping": "Pong"}
        if name == "coreshowchannels":
            rows = [{"Event": "CoreShowChannel", **row} for row in self.channels]
            return [
                {"Response": "Success", "EventList": "start", "Message": "Channels will follow"},
                *rows,
                {"Event": "CoreShowChannelsComplete", "EventList": "Complete", "ListItems": str(len(rows))},
            ]
        return {"Response": "Success", "Message": f"{action.get('Action')} done"}

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if not text:
                if fields:
                    return fields
                continue
            key, _, value = text.partition(":")
            fields[key.strip()] = value.strip()
