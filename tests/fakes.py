"""The test doubles every unit test shares: one clock, and the in-memory AMI server of
:mod:`ivr.ami.testing` (a real :class:`~ivr.ami.connection.AmiConnection` talks to it)."""

from __future__ import annotations

from ivr.ami.testing import FakeAmi as AmiServer

__all__ = ["AmiServer", "Clock"]


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
