"""A warm transfer whose controller died (issue 17): the new leader of a controller pair
takes it over from the switch, so the target's answer and confirmation still complete it.

At takeover the leader looks for callers waiting in ``[ivr-transfer-wait]``
(``CoreShowChannels``) and reads what the transfer left on the caller's channel:
``IVR_XFER_ID``, ``IVR_XFER_TO`` (the target as resolved: resolved again, so the transfer
policy still applies), ``IVR_XFER_AGENT`` and ``IVR_XFER_T0`` (when the wait began, the
offer). Channel variables are hostile: each is checked, and a caller whose transfer does
not hold up is left to the dialplan's safety net (back to the agent after
``IVR_XFER_MAXWAIT``). The target leg is found by the ``ChannelId`` the transfer gave it
(``<id>-t``): ringing, the ring limit runs from the offer; answered (its announcement died
with the old leader; the dialplan hangs that leg up), the target's hang-up returns the
caller; gone (this node saw it: :mod:`ivr.transfer.legs`), the caller is returned at once.
No leg ever seen: the old leader died between the Redirect and the Originate (or its
Originate never reached the switch), and the new leader dials the target, once: under the
dial's :mod:`ivr.once` key if the old leader never took it, else (it took the key and died
before the switch saw the Originate) under a second key, but only when this node has
followed the switch without a gap since the wait began (it would have seen the leg);
otherwise the caller is returned. The ring limit then runs from this dial, cut so that the
announcement and the confirmation still fit before the dialplan's safety net. The states
already announced (``IvrTransfer`` offered, ringing) are not announced again; the states the
switch proves (offered at ``IVR_XFER_T0``; ringing or answered, as the target leg is now, at
the takeover) are recorded again under the dead leader's ids (:meth:`EventBus.decided`), so
they are on record once whether or not it wrote them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import structlog

from ivr.ami.connection import AmiError
from ivr.errors import IvrError
from ivr.rules.transfer import Dial, WarmTransfer
from ivr.transfer.legs import XFER_ID
from ivr.transfer.service import TransferService
from ivr.transfer.settings import Transfer
from ivr.transfer.targets import agent_number, resolve_target

log = structlog.get_logger("ivr.transfer")

EPOCH = re.compile(r"[0-9]{9,11}")
UP, RINGING = "6", "5"  # ChannelState
MIN_RING = 5.0  # s: with less ring time left before the dialplan's safety net, the caller returns now


async def take_over(service: TransferService, wall: Callable[[], float] = time.time) -> list[str]:
    """Take over every transfer in progress on the switch that this node does not know;
    returns their ids."""
    rows = await service.channels()
    taken = []
    for row in rows:
        if row.get("Context") != "ivr-transfer-wait":
            continue
        try:
            xfer = await _rebuild(service, row, rows, wall())
        except (AmiError, IvrError, ValueError) as exc:
            log.warning("transfer.takeover_refused", caller=row.get("Uniqueid", ""), error=str(exc))
            continue
        if xfer is None:
            continue
        service.follow(xfer)
        log.info("transfer.taken_over", transfer=xfer.id, state=xfer.machine.state, call_id=xfer.call_id,
                 target=xfer.target.label, dial_steps=list(xfer.dial_steps))
        taken.append(xfer.id)
        m, now = xfer.machine, service.timers.now()
        if m.state == "offered":  # never dialled, as far as the switch shows: dial it now
            service.carry_out(xfer, [Dial(m.target, (m.deadline or now) - now)])
        elif xfer.target_channel == "":  # the target is gone: the caller comes back now
            service.carry_out(xfer, m.target_hangup(now))
    return taken


async def _getvar(service: TransferService, channel: str, name: str) -> str:
    reply = await service.ami.action({"Action": "Getvar", "Channel": channel, "Variable": name}, 5.0)
    return str(reply.get("Value") or "") if reply is not None else ""


async def _rebuild(service: TransferService, row: Any, rows: list[Any], now_wall: float) -> Transfer | None:
    channel = row["Channel"]
    xid = await _getvar(service, channel, "IVR_XFER_ID")
    if not XFER_ID.fullmatch(xid):
        raise ValueError(f"IVR_XFER_ID: not a transfer id, got {xid[:40]!r}")
    if xid in service.transfers:
        return None
    s = service.settings
    target = resolve_target(await _getvar(service, channel, "IVR_XFER_TO"), s.agents,
                            allow_dial=s.allow_dial, allow_numbers=s.allow_numbers)
    t0 = await _getvar(service, channel, "IVR_XFER_T0")
    if not EPOCH.fullmatch(t0) or not 0 <= now_wall - int(t0) <= 3600:
        raise ValueError(f"IVR_XFER_T0: not the time this transfer began, got {t0[:20]!r}")
    agent_channel = await _getvar(service, channel, "IVR_XFER_AGENT")
    agent = next((r for r in rows if agent_channel and r.get("Channel") == agent_channel), None)
    tgt = next((r for r in rows if r.get("Uniqueid") == f"{xid}-t"), None)
    now, elapsed = service.timers.now(), now_wall - int(t0)
    ring_left = min(s.ring_limit, s.max_wait - s.announce_max - s.confirm_timeout - elapsed)
    steps: tuple[str, ...] = ("dial",)
    if tgt is not None and tgt.get("ChannelState") == UP:
        state, deadline = "answered", now + s.confirm_timeout
    elif tgt is not None or service.legs.seen(f"{xid}-t") or ring_left < MIN_RING:
        state, deadline = "ringing", now - elapsed + s.ring_limit  # gone (no channel): returned at once
    else:
        state, deadline = "offered", now + ring_left
        if service.legs.followed_since(int(t0)):  # the old leader's Originate never reached the switch
            steps = ("dial", "dial-again")
    machine = WarmTransfer.taken_over(target.dial, s.ring_limit, s.confirm_timeout, s.announce_max,
                                      state=state, deadline=deadline, agent_present=agent is not None)
    call_id = row.get("Linkedid") or row["Uniqueid"]
    proven = [("offered", float(t0))]  # the caller waits in ivr-transfer-wait since IVR_XFER_T0
    if tgt is not None and tgt.get("ChannelState") in (RINGING, UP):  # the target leg, as the switch has it
        proven.append(("ringing" if tgt.get("ChannelState") == RINGING else "answered", now_wall))
    for done, at in proven:  # written again under the dead leader's ids: a duplicate if it wrote them
        service.bus.decided("transfer.state", call_id, (xid, done), at=at, transfer_id=xid, state=done,
                            reason="", target=target.label, caller=row["Uniqueid"], rebuilt=True)
    return Transfer(
        id=xid, call_id=call_id, caller=row["Uniqueid"], caller_channel=channel,
        caller_number=row.get("CallerIDNum", ""), agent=agent["Uniqueid"] if agent is not None else "",
        agent_channel=agent_channel if agent is not None else "",
        agent_number=agent_number(agent_channel, s.agents, agent.get("CallerIDNum", "") if agent else ""),
        target=target, target_uid=f"{xid}-t", machine=machine, dial_steps=steps,
        target_channel=tgt.get("Channel", "") if tgt is not None else "")
