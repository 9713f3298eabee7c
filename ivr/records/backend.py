"""What the call recorder (:mod:`ivr.records.recorder`) writes to: a store with ``apply``
(:class:`Store`), and what else a store may offer (a batch in one transaction, ``close``,
the :class:`~ivr.records.db.Database` it writes to); how the recorder opens one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ivr.events import CallEvent
from ivr.records.db import Database


class Store(Protocol):
    """What the recorder writes to: a :class:`~ivr.records.store.CallStore`, or a test's
    store with ``apply`` alone. What else a store offers is asked by the protocols below."""

    async def apply(self, event: CallEvent) -> bool | None: ...


@runtime_checkable
class BatchStore(Store, Protocol):
    """Writes a replayed batch in one transaction (one commit per batch)."""

    async def apply_many(self, events: list[CallEvent]) -> list[bool]: ...


@runtime_checkable
class ClosingStore(Store, Protocol):
    async def close(self) -> None: ...


@runtime_checkable
class DatabaseStore(Store, Protocol):
    """Writes to a :class:`~ivr.records.db.Database`, which says when a call failed it
    (``broken``, ``on_broken``: a reader's or a ping's, not only the recorder's)."""

    db: Database


Opener = Callable[[], Awaitable[Store]]  # returns an open store; raises DatabaseError
Hook = Callable[[Any], Awaitable[None] | None]  # on_open(store): the store the opener gave
