"""R5 warm transfer over AMI and FastAGI: the I/O around :class:`ivr.rules.transfer.WarmTransfer`.

One :class:`TransferService` per controller. A transfer starts from the HTTP API
(``transfer(call_id, target)``) or the agent's feature code (``UserEvent:
IvrTransferRequest``, see ``asterisk/ivr-transfer.conf``). Then:

* the caller and the transferring agent leave their bridge (one ``Redirect`` with
  ``ExtraChannel``): the caller to ``[ivr-transfer-wait]`` (reason, music, reminders), the
  agent to ``[ivr-transfer-agent]`` (ringback);
* the target is originated (``ChannelId`` chosen here, so every event of that leg is
  recognised by its Uniqueid) into ``[ivr-transfer-target]``; its ringing is an ordinary
  dial leg (``DialBegin`` / ``Newstate Ringing`` / ``DialEnd``) that the ring monitor sees;
* on answer ``target_agi`` (FastAGI route ``transfer-target``) plays the announcement and
  waits for the digit; the machine's deadlines (ring limit, confirmation timeout) are
  driven by the :class:`~ivr.timers.TimerService`;
* confirmed: the caller is redirected to ``[ivr-transfer-connect]`` (thanks, ``Bridge``
  with the target) and the agent is hung up once the caller is in the target's bridge;
  otherwise to ``[ivr-transfer-return]`` (apology, ``Bridge`` with the waiting agent, or
  the fallback queue if the agent has gone).

The dialplan is the safety net: if the controller dies mid-transfer, the caller leaves the
wait after ``IVR_XFER_MAXWAIT`` s through ``[ivr-transfer-return]``. No step of the
transfer ever hangs the caller up.

An ``IvrTransferRequest`` from a channel the ``agent_leg`` check does not know as an
agent's leg is refused, logged and counted (``ivr_transfer_keys_refused_total``).

Every state change goes out as ``UserEvent: IvrTransfer`` (``State``, ``Target``,
``Uniqueid`` of the caller, ``TransferId``, ``Reason``), as a ``transfer.state``
:class:`~ivr.events.CallEvent`, and into the metrics.

Here: starting a transfer and following the switch (AMI events). Carrying out the
machine's actions: :mod:`ivr.transfer.actions`; the target's FastAGI route:
:mod:`ivr.transfer.announce`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
from collections.abc import Callable
from typing import Any

import structlog

from ivr.ami.channels import AgentLegCheck, configured_agent_leg, from_agent_leg
from ivr.ami.confirm import really_gone
from ivr.ami.connection import AmiError
from ivr.ami.link import AmiLink
from ivr.errors import IvrError, NoSuchCall
from ivr.events import EventBus
from ivr.once import Once
from ivr.rules.transfer import TransferAction, WarmTransfer
from ivr.tasks import TaskSet
from ivr.timers import TimerService
from ivr.transfer.announce import TargetAnnouncement
from ivr.transfer.legs import TargetLegs
from ivr.transfer.metrics import TransferMetrics
from ivr.transfer.settings import CallNotTransferable, Transfer, TransferSettings
from ivr.transfer.targets import Target, agent_number, resolve_target

log = structlog.get_logger("ivr.transfer")

FAILED_DIAL = {"BUSY": "busy", "CONGESTION": "congestion", "CHANUNAVAIL": "unavailable",
               "NOANSWER": "noanswer"}


class TransferService(TargetAnnouncement):
    AGI_ROUTE = "transfer-target"

    def __init__(self, ami: AmiLink, settings: TransferSettings, *, timers: TimerService,
                 bus: EventBus | None = None, metrics: TransferMetrics | None = None,
                 agent_leg: AgentLegCheck | None = None, acting: Callable[[], bool] = lambda: True,
                 once: Once | None = None) -> None:
        self.ami = ami
        self.acting = acting  # False on a pair's standby: the leader acts on the same key
        self.once = once or Once()  # the target's dial: once per switch (a takeover: takeover.py)
        self.legs = TargetLegs()  # the target legs this node saw, even as a standby
        self.settings = settings
        # Which channels may use the agent's transfer key: by default the configured
        # agents' devices; the controller passes its ring monitor's view.
        self.agent_leg = agent_leg or configured_agent_leg(settings.agents.values())
        self.timers = timers
        self.bus = bus or EventBus()
        self.metrics = metrics or TransferMetrics()
        self.transfers: dict[str, Transfer] = {}  # by transfer id, while not done
        self._connecting: dict[str, Transfer] = {}  # caller Uniqueid -> confirmed transfer
        self._ids = itertools.count(1)
        self._prefix = f"ivrx{os.getpid():x}{id(self) & 0xffff:x}"
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks = TaskSet("transfer.task_failed")

    def attach(self) -> None:
        for name in ("Hangup", "Newstate", "DialBegin", "DialEnd", "BridgeEnter", "UserEvent"):
            self.ami.subscribe(name, self.handle_event)
        for name in ("Newchannel", "DialBegin"):
            self.ami.subscribe(name, self.legs.saw)
        self.ami.on_connected(lambda: self.legs.connected(self.ami.connects))

    async def close(self) -> None:
        await self._tasks.close()

    # -- lookups --------------------------------------------------------------------
    def by_caller(self, uid: str) -> Transfer | None:
        return next((t for t in self.transfers.values() if t.caller == uid), None)

    def _find(self, uid: str) -> tuple[Transfer, str] | None:
        for t in self.transfers.values():
            if uid == t.caller:
                return t, "caller"
            if uid == t.target_uid:
                return t, "target"
            if t.agent and uid == t.agent:
                return t, "agent"
        return None

    async def channels(self) -> list[Any]:
        """The switch's channels now (``CoreShowChannels``)."""
        replies = await self.ami.action({"Action": "CoreShowChannels"}, 10.0, as_list=True)
        return [m for m in replies if m.get("Event") == "CoreShowChannel"]

    # -- starting a transfer --------------------------------------------------------
    async def transfer(self, call_id: str, target: str) -> Transfer:
        """Transfer the caller of call ``call_id`` (its Linkedid, or the caller's Uniqueid)
        away from the agent it is bridged with, to ``target``."""
        tgt = resolve_target(target, self.settings.agents, allow_dial=self.settings.allow_dial,
                             allow_numbers=self.settings.allow_numbers)
        rows = await self.channels()
        caller = next((r for r in rows if r.get("Uniqueid") == call_id), None) or next(
            (r for r in rows if r.get("Linkedid") == call_id and r.get("Uniqueid") == call_id), None)
        if caller is None:
            raise NoSuchCall(f"no call {call_id!r} on the switch", call_id=call_id)
        return await self._start(caller, rows, tgt)

    async def transfer_from_agent(self, agent_uid: str, target: str) -> Transfer:
        """The agent on channel ``agent_uid`` keyed a transfer (feature code)."""
        tgt = resolve_target(target, self.settings.agents, allow_dial=self.settings.allow_dial,
                             allow_numbers=self.settings.allow_numbers)
        rows = await self.channels()
        agent = next((r for r in rows if r.get("Uniqueid") == agent_uid), None)
        bridge = agent.get("BridgeId", "") if agent is not None else ""
        caller = next((r for r in rows if bridge and r.get("BridgeId") == bridge
                       and r.get("Uniqueid") != agent_uid), None)
        if caller is None:
            raise NoSuchCall(f"channel {agent_uid!r} is not on a call", agent=agent_uid)
        return await self._start(caller, rows, tgt, agent_uid)

    async def _start(self, caller: Any, rows: list[Any], tgt: Target, agent_uid: str = "") -> Transfer:
        caller_uid = caller["Uniqueid"]
        if self.by_caller(caller_uid) is not None or caller_uid in self._connecting:
            raise CallNotTransferable("this caller is already being transferred", caller=caller_uid)
        bridge = caller.get("BridgeId", "")
        agent = next((r for r in rows if bridge and r.get("BridgeId") == bridge
                      and r.get("Uniqueid") != caller_uid
                      and (not agent_uid or r.get("Uniqueid") == agent_uid)), None)
        if agent is None:
            raise CallNotTransferable("the caller is not connected to an agent", caller=caller_uid)
        xid = f"{self._prefix}-{next(self._ids)}"
        s = self.settings
        xfer = Transfer(
            id=xid, call_id=caller.get("Linkedid") or caller_uid, caller=caller_uid,
            caller_channel=caller["Channel"], caller_number=caller.get("CallerIDNum", ""),
            agent=agent["Uniqueid"], agent_channel=agent["Channel"],
            agent_number=agent_number(agent["Channel"], s.agents, agent.get("CallerIDNum", "")),
            target=tgt, target_uid=f"{xid}-t",
            machine=WarmTransfer(tgt.dial, s.ring_limit, s.confirm_timeout, s.announce_max),
        )
        # Variables the dialplan needs, set before anything moves.
        await self._setvars(xfer.caller, IVR_XFER_ID=xid, IVR_XFER_SOUNDS=s.sounds,
                            IVR_XFER_REMIND=str(s.remind_every), IVR_XFER_MAXWAIT=str(s.max_wait),
                            IVR_XFER_AGENT=xfer.agent_channel, IVR_XFER_TARGET="", IVR_XFER_TO=tgt.label)
        await self._setvars(xfer.agent, IVR_XFER_ID=xid, IVR_XFER_MAXWAIT=str(s.max_wait))
        self.follow(xfer)
        log.info("transfer.start", transfer=xid, call_id=xfer.call_id, caller=caller_uid,
                 agent=xfer.agent_number, target=tgt.label)
        try:
            await self._apply(xfer, xfer.machine.offer(self.timers.now()))
        except AmiError:
            # Nothing moved (the Redirect failed): the call goes on as it was.
            self._forget(xfer)
            raise
        return xfer

    # What a takeover (takeover.py) uses besides channels(): a transfer rebuilt from the switch.
    def follow(self, xfer: Transfer) -> None:
        """Know ``xfer`` and drive its machine's deadlines."""
        self.transfers[xfer.id] = xfer
        self.timers.add(xfer.id, xfer.machine, functools.partial(self._apply, xfer))

    def carry_out(self, xfer: Transfer, actions: list[TransferAction]) -> None:
        """Carry out the machine's ``actions`` in the background, under the transfer's lock."""
        self._spawn(self._apply(xfer, actions))

    # -- AMI events -----------------------------------------------------------------
    async def _hung_up(self, xfer: Transfer, role: str, uniqueid: str) -> None:
        """A leg's Hangup event, once the switch confirms that leg is gone."""
        try:
            gone = await really_gone(self.ami, uniqueid)
        except AmiError as exc:
            log.warning("transfer.hangup_unconfirmed", transfer=xfer.id, role=role, error=str(exc))
            return
        if not gone:
            log.warning("transfer.hangup_event_refused", transfer=xfer.id, role=role, uniqueid=uniqueid,
                        reason="the switch still has the channel (forged or stale event)")
            return
        m, now = xfer.machine, self.timers.now()
        if role == "caller":
            actions = m.caller_hangup(now)
            if xfer.agent:  # the call is over for the agent too
                await self._hangup(xfer.agent, linkedid=xfer.call_id, why="caller hung up")
        elif role == "agent":
            xfer.agent = ""
            actions = m.agent_hangup(now)
        else:
            actions = m.target_hangup(now)
        if actions:
            await self._apply(xfer, actions)


    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    def handle_event(self, event: Any) -> None:
        kind = event.get("Event", "")
        if kind == "UserEvent":
            if event.get("UserEvent") == "IvrTransferRequest":
                uid, channel = event.get("Uniqueid", ""), event.get("Channel", "")
                if not from_agent_leg(event, self.agent_leg):
                    # Not an agent's leg: the switch arms *2 on agent legs only, so this is a
                    # misconfigured switch or a forged event. Never start a transfer for it.
                    log.warning("transfer.request_refused_not_agent", uniqueid=uid, channel=channel,
                                linkedid=event.get("Linkedid", ""), target=event.get("Target", ""))
                    self.metrics.keys_refused.inc()
                    return
                self._spawn(self._requested(uid, event.get("Target", "")))
            return
        if kind == "BridgeEnter":
            connecting = self._connecting.pop(event.get("Uniqueid", ""), None)
            if connecting is not None and connecting.agent:
                # The caller is with the target: now the transferring agent is released.
                self._spawn(self._hangup(connecting.agent, linkedid=connecting.call_id, why="transfer done"))
            return
        if kind in ("DialBegin", "DialEnd"):
            found = self._find(event.get("DestUniqueid", ""))
        else:
            found = self._find(event.get("Uniqueid", ""))
        if found is None:
            gone = self._connecting.pop(event.get("Uniqueid", ""), None) if kind == "Hangup" else None
            if gone is not None:  # the caller left during the thanks: release the others
                caller = event.get("Uniqueid", "")
                for uid, linkedid in ((gone.agent, gone.call_id), (gone.target_uid, "")):
                    if uid:
                        self._spawn(self._hangup(uid, linkedid=linkedid, gone=(caller,), why="caller left"))
            return
        xfer, role = found
        m, now = xfer.machine, self.timers.now()
        actions: list[TransferAction] = []
        if kind == "Hangup":  # acted on once the switch confirms it (a Hangup can be forged)
            self._spawn(self._hung_up(xfer, role, event.get("Uniqueid", "")))
            return
        if kind == "Newstate" and role == "target" and event.get("ChannelState") == "5":
            actions = m.target_ringing(now)
        elif kind == "DialBegin":
            xfer.target_channel = event.get("DestChannel", "") or xfer.target_channel
        elif kind == "DialEnd":
            status = event.get("DialStatus", "")
            if status == "ANSWER":
                actions = m.target_answered(now)
            elif status in FAILED_DIAL:
                actions = m.target_busy(now, FAILED_DIAL[status])
        if actions:
            self._spawn(self._apply(xfer, actions))

    async def _requested(self, agent_uid: str, target: str) -> None:
        if not self.acting():
            log.debug("transfer.standby_skipped", agent=agent_uid, target=target)
            return
        try:
            await self.transfer_from_agent(agent_uid, target)
        except IvrError as exc:
            log.warning("transfer.request_refused", agent=agent_uid, target=target, error=str(exc))
