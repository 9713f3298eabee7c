"""Attempts the store says are under way (``dialling``) that this controller is not
running: left by a controller that stopped, died, or lost the lease to this one. The
switch decides, never a blind reset (a standby taking over must not place a second call for
an attempt still ringing or bridged):

* the attempt's agent leg (its ChannelId, kept with the attempt) is still on the switch
  (AMI ``Status``): this controller *adopts* it: it follows the leg's events, answers its
  FastAGI sessions (the agent's announcement, the customer's greeting) and writes its
  outcome;
* the switch has no such channel: the attempt ended ``interrupted`` (not the customer's
  fault) and the call-back is due again;
* the switch cannot be asked (AMI down): nothing is changed; the next look tries again.

Attempts kept before the channel was recorded (migration 4) are reopened as before.

The agent's FastAGI session may come to this controller before its look at the queue has
(the previous node died mid-announcement and the dialplan asks again):
:func:`adopt_for_session` adopts that one attempt at once. Both run under the service's
``adopting`` lock, so an attempt is adopted once.
"""

from __future__ import annotations

from typing import Any

import structlog

from ivr.ami.confirm import channel_facts
from ivr.callbacks.model import Attempt, CallbackQueueStore, Row

log = structlog.get_logger("ivr.callbacks")


class NotNow(Exception):  # a verdict, not an error: the dialplan asks again
    """The attempt cannot be looked up now (no database, not the leader, AMI down)."""


async def resolve_in_flight(service: Any, store: CallbackQueueStore, now: float) -> tuple[int, int]:
    """Adopt or reopen every attempt under way that ``service`` is not running; returns
    (adopted, reopened). Raises :class:`~ivr.ami.connection.AmiError` if the switch cannot
    be asked (nothing is reopened then)."""
    async with service.adopting:
        return await _resolve(service, store, now)


async def _resolve(service: Any, store: CallbackQueueStore, now: float) -> tuple[int, int]:
    keep: list[str] = []
    adopt: list[Row] = []
    for row in await store.in_flight():
        uid = str(row.get("channel") or "")
        if uid in service.attempts:  # ours, still running
            keep.append(str(row["callback_id"]))
        elif uid and await channel_facts(service.ami, uid) is not None:
            keep.append(str(row["callback_id"]))
            adopt.append(row)
    reopened = await store.recover(now, keep)
    for row in adopt:
        service.adopt(store, row)
        log.info("callbacks.adopted", callback_id=row["callback_id"], channel=row["channel"],
                 placed_by=row.get("node"))
    if reopened:
        log.info("callbacks.recovered", reopened=reopened)
    return len(adopt), reopened



async def adopt_for_session(service: Any, uid: str) -> Attempt | None:
    """The agent's FastAGI session on leg ``uid``, an attempt this controller is not
    running: adopt it if the store has it under way on that leg (its channel is alive: it
    is in the session). None: no such attempt under way (the session is refused). Raises
    :class:`NotNow` when the store cannot be asked, this node does not act or its AMI link
    is down (it could neither follow the attempt nor send its stages)."""
    store = service.store()
    if store is None:
        raise NotNow("the records database is not open")
    if not service.acting() or not service.ami.connected:  # it could not follow the attempt's events
        raise NotNow("this node does not lead" if service.ami.connected else "AMI not connected")
    async with service.adopting:
        if uid in service.attempts:  # adopted by the look at the queue meanwhile
            running: Attempt = service.attempts[uid]
            return running
        try:
            rows = await store.in_flight()
        except Exception as exc:  # any database failure: the dialplan asks again
            raise NotNow(f"the call-back queue could not be read: {exc}") from exc
        row = next((r for r in rows if str(r.get("channel") or "") == uid), None)
        if row is None:
            return None
        att: Attempt = service.adopt(store, row)
        log.info("callbacks.adopted", callback_id=row["callback_id"], channel=uid, placed_by=row.get("node"),
                 by="agent-session")
        return att
