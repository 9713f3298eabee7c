"""Keeping the AMI link alive: reconnect backoff, and telling a busy switch from a dead socket.

A half-open socket (the switch gone, a firewall dropping the path) sends nothing at all;
a saturated Asterisk answers a ``Ping`` late but keeps writing events. So a Pong missing
after ``timeout`` s is fatal only if not one byte arrived in that window; while bytes keep
coming the Pong is awaited up to ``busy_timeout`` s. Reconnecting to a busy switch would
only add a login and a ``CoreShowChannels`` of every channel to its load, and blind the
controller (events during the gap are lost) exactly when it is most needed. (Asterisk's
manager writes a session's events and its replies from that session's one thread, so a
Pong queued behind a backlog of events comes late while the backlog's bytes keep coming.)
``busy_timeout`` still bounds the wait, so a session that streams events but no longer
runs actions is recovered too. Defaults (``[ami]``, ivr/sections.py): Ping every 5 s,
3 s of silence, 30 s busy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ivr.ami.errors import AmiError, AmiTimeout


async def ping_once(send: Callable[[], Awaitable[Any]], lost: asyncio.Event, received: Callable[[], int],
                    timeout: float, busy_timeout: float) -> tuple[str, float]:
    """Send one Ping (``send()``, whose own timeout is ``busy_timeout``) and wait for it.

    Returns ``("", seconds the Pong took)`` or ``(why the connection is dead, 0.0)``:
    the connection was lost, nothing was received for ``timeout`` s, or the switch kept
    sending but gave no Pong within ``busy_timeout`` s. ``received()`` counts the bytes
    read from the socket so far."""
    loop = asyncio.get_running_loop()
    sent = loop.time()
    pong = asyncio.ensure_future(send())
    gone = asyncio.ensure_future(lost.wait())
    try:
        while True:
            before = received()
            done, _ = await asyncio.wait({pong, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if pong in done:
                exc = pong.exception()
                if isinstance(exc, AmiTimeout):
                    return f"no reply to Ping within {busy_timeout} s although the switch still sends", 0.0
                if isinstance(exc, AmiError):
                    return str(exc), 0.0
                if exc is not None:
                    raise exc
                return "", loop.time() - sent
            if gone in done:
                return "connection lost", 0.0
            if received() == before:
                return f"no reply to Ping and nothing received within {timeout} s (half-open socket)", 0.0
    finally:
        for task in (pong, gone):
            task.cancel()
        await asyncio.gather(pong, gone, return_exceptions=True)


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1  # fraction of the delay, randomised, so many controllers spread out

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay * (1 + random.uniform(-self.jitter, self.jitter))  # noqa: S311 - jitter, not a secret
            delay = min(delay * self.factor, self.maximum)
