"""panoramisk's ``Manager`` kept for what it does well, parsing the stream and matching
replies to actions, and trimmed of what :class:`~ivr.ami.connection.AmiConnection` does
itself: connecting, logging in, pinging, reconnecting and re-sending actions (see
ASTERISK.md, "panoramisk traps"). Its dispatch matches the event patterns once per event
name, not once per event (issue 10, AMI ingest)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ivr.ami.protocol import AmiProtocol


class _NothingIsResent:
    """panoramisk's ``forgetable_actions``: contains every action name."""

    def __contains__(self, _name: object) -> bool:
        return True


class LeanManager(Manager):  # type: ignore[misc]  # panoramisk ships no types
    """panoramisk's Manager without its own connect/login/ping/reconnect logic."""

    patterns: list[tuple[str, re.Pattern[str]]]  # the base class's (pattern, regexp) list

    def __init__(self, on_lost: Callable[[object], None], **config: Any) -> None:
        self._routes: dict[str, tuple[list[str], list[list[Any]]]] = {}  # event name -> patterns, callbacks
        self._pending: set[asyncio.Future[Any]] = set()  # coroutine callbacks running (kept from the GC)
        config.setdefault("protocol_factory", AmiProtocol)  # the lean reader (ivr/ami/protocol.py)
        super().__init__(forgetable_actions=_NothingIsResent(), ping_delay=0, ping_interval=0, **config)
        self._on_lost = on_lost
        self.callbacks.pop("FullyBooted", None)  # its send_awaiting_actions: never re-send
        self.patterns = [p for p in self.patterns if p[0] != "FullyBooted"]
        self._routes.clear()

    def register_event(self, pattern: str, callback: Any = None) -> Any:
        self._routes.clear()
        return super().register_event(pattern, callback)

    def dispatch(self, event: Message) -> list[str]:
        """``Manager.dispatch`` with the patterns matched once per event name, not per
        event (the callback lists themselves are read live, as there)."""
        event.manager = self
        name = event.get("Event", "")
        route = self._routes.get(name)
        if route is None:
            if len(self._routes) > 1000:  # event names are few; never grow without bound
                self._routes.clear()
            matched = [p for p, regexp in self.patterns if regexp.match(name) is not None]
            route = self._routes[name] = (matched, [self.callbacks[p] for p in matched])
        for callbacks in route[1]:
            for callback in callbacks:
                ret = callback(self, event)
                if ret is not None and (asyncio.iscoroutine(ret) or isinstance(ret, asyncio.Future)):
                    pending = asyncio.ensure_future(ret, loop=self.loop)
                    self._pending.add(pending)
                    pending.add_done_callback(self._pending.discard)
        return list(route[0])

    def attach(self, protocol: AMIProtocol) -> None:
        """What ``Manager.connection_made`` does, minus login, pinger and reconnect."""
        self.protocol = protocol
        protocol.queue.clear()
        protocol.factory = self
        protocol.log = self.log
        protocol.config = self.config
        protocol.encoding = self.encoding = self.config["encoding"]
        self.responses = protocol.responses = {}
        self._connected = True

    def connection_lost(self, exc: object) -> None:  # called by AMIProtocol
        self._connected = False
        self.awaiting_actions.clear()
        self._on_lost(exc)
