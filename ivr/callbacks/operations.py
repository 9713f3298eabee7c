"""The call-back operations the API offers (a part of
:class:`~ivr.callbacks.service.CallbackService`, its base class, kept apart so each reads
on its own): the queue with places and next attempts, cancel, retry now, and create
(``POST /api/callbacks``: the number, the target agent or queue and the window checked)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ivr.ami.link import AmiLink
from ivr.ami.queues import queue_members
from ivr.callbacks.model import (
    Attempt,
    CallbackQueueStore,
    CallbackSettings,
    CallbacksUnavailable,
    InvalidCallback,
    NoSuchCallback,
    Row,
    to_callback,
)
from ivr.rules.callback import next_opportunity, parse_window, plan_window
from ivr.rules.dialing import QUEUE_RE


class CallbackOperations:
    # Provided by CallbackService.
    ami: AmiLink
    settings: CallbackSettings
    store: Callable[[], CallbackQueueStore | None]
    attempts: dict[str, Attempt]
    wall: Callable[[], float]
    local: Callable[[float], datetime]
    poke: Callable[[], None]
    _hangup: Callable[[str], Any]

    async def queue(self) -> list[Row]:
        """Open call-backs in line: their place (1 = next), the attempt under way (agent,
        stage) and ``next_attempt_at``: when it can next be placed, moved into business
        hours and the caller's window (None: never again, e.g. a ``today`` past its hours)."""
        store = self._store()
        rows = await store.open()
        placing = {a.callback.id: a for a in self.attempts.values()}
        now = self.wall()
        local = self.local(now)
        out = []
        for place, row in enumerate(rows, 1):
            att = placing.get(str(row["callback_id"]))
            cb = to_callback(row)
            out.append({**row, "place": place, "agent": att.agent if att else None,
                        "stage": att.stages[-1] if att and att.stages else None,
                        "next_attempt_at": now if att else next_opportunity(cb, now, local, self.settings.policy)})
        return out

    async def cancel(self, callback_id: str) -> Row:
        row = await self._store().cancel(callback_id, self.wall(), reason="cancelled")
        if row is None:
            raise NoSuchCallback(f"no call-back {callback_id}", callback_id=callback_id)
        for att in self.attempts.values():
            if att.callback.id == callback_id and not att.accepted:
                await self._hangup(att.uid)  # an agent still deciding is let go
        return row

    async def retry_now(self, callback_id: str) -> Row:
        row = await self._store().retry_now(callback_id, self.wall())
        if row is None:
            raise NoSuchCallback(f"no call-back {callback_id}", callback_id=callback_id)
        self.poke()
        return row

    def _store(self) -> CallbackQueueStore:
        store = self.store()
        if store is None:
            raise CallbacksUnavailable("the call-back store is unavailable: the database could not be opened")
        return store

    async def create(self, *, phone: str, target: str = "", best_time: str = "asap", held_by: str = "",
                     call_id: str = "") -> Row:
        """A call-back asked for through the API (``phone`` checked by the route). A second
        request for the same number and target merges into the open one, which keeps its
        place. :class:`InvalidCallback` (400) names the field that is wrong."""
        target = await self._check_target(target)
        if held_by and held_by not in self.settings.agents:
            raise InvalidCallback(f"held_by: no agent {held_by!r} is configured", field="held_by")
        try:
            window = parse_window(best_time, whole_hours=False)
        except ValueError as exc:
            raise InvalidCallback(f"best_time: {exc}", field="best_time") from None
        now = self.wall()
        chosen = plan_window(window, self.local(now))
        row = await self._store().create(phone=phone, target=target, best_time=chosen.best_time,
                                         not_before=chosen.not_before, held_by=held_by or None,
                                         call_id=call_id or None, at=now)
        if row is None:
            raise InvalidCallback(f"call_id: no call {call_id!r} on record", field="call_id")
        self.poke()
        return row

    async def _check_target(self, target: str) -> str:
        """"" (any agent), a configured agent's number, or ``queue:NAME`` of a queue the
        switch has."""
        if not target or target in self.settings.agents:
            return target
        if target.startswith("queue:"):
            name = target.removeprefix("queue:")
            if not QUEUE_RE.match(name):
                raise InvalidCallback(f"target: {name!r} is not a queue name (letters, digits, _ and -)",
                                      field="target")
            if await queue_members(self.ami, name) is None:
                raise InvalidCallback(f"target: the switch has no queue {name!r}", field="target")
            return target
        raise InvalidCallback(f"target: {target!r} is neither a configured agent's number nor queue:NAME",
                              field="target")
