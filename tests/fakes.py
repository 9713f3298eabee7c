"""The test doubles every unit test shares: one clock; the in-memory AMI server of
:mod:`ivr.ami.testing` (a real :class:`~ivr.ami.connection.AmiConnection` talks to it,
for tests of the connection and of what crosses the wire); and :class:`RecordingAmi`, an
in-process stand-in for the connection where a service's decisions are what is tested."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ivr.ami.connection import AmiActionError
from ivr.ami.testing import FakeAmi as AmiServer
from ivr.ami.testing import LiveChannels

__all__ = ["AmiServer", "Clock", "RecordingAmi"]

Reply = Callable[[dict[str, Any]], Any]


class Clock:
    """A clock that moves only when told: ``clock()`` is the time, ``clock.t`` sets it.
    Inject it into the timer service and the rules; fire deadlines by advancing it."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class RecordingAmi:
    """What services use of :class:`~ivr.ami.connection.AmiConnection`, in process:
    ``subscribe`` (event names case-insensitive), ``on_connected``, ``action`` (recorded;
    answered by ``replies[name](action)`` or ``{"Response": "Success"}``; an action named in
    ``fail`` raises :class:`AmiActionError`), and ``event(...)`` to deliver an event to the
    subscribers at once. ``live`` (:class:`~ivr.ami.testing.LiveChannels`) is the switch's
    own view that ``Status`` answers from: learnt from every event except a ``forged`` one,
    so a test can prove the controller asks the switch before destroying anything."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.subs: dict[str, list[Callable[[dict[str, str]], Any]]] = {}
        self.replies: dict[str, Reply] = {}
        self.fail: set[str] = set()
        self.connected = True
        self.connects = 1
        self.live = LiveChannels()

    def subscribe(self, event: str, callback: Callable[[dict[str, str]], Any]) -> Callable[[], None]:
        self.subs.setdefault(event.lower(), []).append(callback)
        return lambda: None

    def on_connected(self, callback: Any) -> None:
        pass

    def event(self, fields: dict[str, str] | None = None, forged: bool = False, **more: str) -> None:
        fields = {**(fields or {}), **more}
        if not forged:
            self.live.learn(fields)
        for cb in self.subs.get(fields["Event"].lower(), []):
            cb(fields)

    def fire(self, event: str, **fields: str) -> None:
        self.event(Event=event, **fields)

    async def action(self, action: dict[str, Any], timeout: float = 10.0, *, as_list: bool | None = None,
                     **_: Any) -> Any:
        self.actions.append(action)
        name = action["Action"]
        if name in self.fail:
            raise AmiActionError(f"AMI {name} failed: No such channel")
        live = self.live.act(action)
        reply = self.replies.get(name)
        if reply is not None:
            return reply(action)
        if isinstance(live, dict) and live.get("Response") == "Error":
            raise AmiActionError(f"AMI {name} failed: {live['Message']}")
        return live or {"Response": "Success"}

    def sent(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["Action"] == name]

    named = sent

    def states(self) -> list[str]:
        return [a["State"] for a in self.sent("UserEvent")]
