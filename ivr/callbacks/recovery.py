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
"""

from __future__ import annotations

from typing import Any

import structlog

from ivr.ami.confirm import channel_facts
from ivr.callbacks.model import CallbackQueueStore, Row

log = structlog.get_logger("ivr.callbacks")


async def resolve_in_flight(service: Any, store: CallbackQueueStore, now: float) -> tuple[int, int]:
    """Adopt or reopen every attempt under way that ``service`` is not running; returns
    (adopted, reopened). Raises :class:`~ivr.ami.connection.AmiError` if the switch cannot
    be asked (nothing is reopened then)."""
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

