"""The call-handling rules (RULES.md R1, R3, R4, R5) as pure state machines.

Every machine here is plain Python: no I/O, no asyncio, no wall clock. Time is passed in
as ``now`` (seconds on a monotonic clock) to every method; each method returns a list of
*actions* (frozen dataclasses) that the I/O layer must carry out; and each machine exposes
``next_deadline`` (``float | None``), the earliest ``now`` at which ``on_timer(now)`` must
be called. :class:`ivr.timers.TimerService` drives any number of them from one task.
"""

from __future__ import annotations

from typing import Any, Protocol


class Machine(Protocol):
    """What :class:`ivr.timers.TimerService` needs from a rule machine."""

    @property
    def next_deadline(self) -> float | None: ...

    def on_timer(self, now: float) -> list[Any]: ...
