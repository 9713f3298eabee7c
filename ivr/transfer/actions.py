"""Carrying out a warm transfer's actions on the switch (:class:`TransferActions`, a base of
:class:`~ivr.transfer.service.TransferService`): the machine's actions one at a time under
the transfer's lock (``Redirect`` of the caller and the agent, the target's ``Originate``
once per switch, ``Setvar``, the target's confirmed hang-up), each state change announced
(``UserEvent: IvrTransfer``, the ``transfer.state`` record, the metrics). The service finds
the transfers and follows the switch; this is what it does to the switch."""

from __future__ import annotations

import asyncio
import functools

import structlog

from ivr.ami.confirm import hang_up_confirmed
from ivr.ami.connection import AmiError
from ivr.ami.link import AmiLink
from ivr.events import EventBus
from ivr.once import Once, action_key
from ivr.rules.transfer import (
    Announce,
    Connect,
    Dial,
    HangupTarget,
    PlayToCaller,
    ReturnCaller,
    StateChanged,
    TransferAction,
)
from ivr.timers import TimerService
from ivr.transfer.metrics import TransferMetrics
from ivr.transfer.settings import Transfer

log = structlog.get_logger("ivr.transfer")

OUTCOMES = frozenset({"completed", "abandoned", "refused", "timeout", "noanswer", "busy", "hangup"})
AGENTS = ("agent", "queue")  # targets that become the caller's agent


class TransferActions:
    # Provided by TransferService.
    ami: AmiLink
    once: Once
    timers: TimerService
    bus: EventBus
    metrics: TransferMetrics
    transfers: dict[str, Transfer]
    _connecting: dict[str, Transfer]
    _locks: dict[str, asyncio.Lock]

    # -- carrying out the machine's actions -----------------------------------------
    async def _apply(self, xfer: Transfer, actions: list[TransferAction]) -> None:
        lock = self._locks.setdefault(xfer.id, asyncio.Lock())
        async with lock:
            await self._apply_unlocked(xfer, actions)
            self.timers.poke(xfer.id)
            if xfer.machine.done:
                self._forget(xfer)

    async def _apply_unlocked(self, xfer: Transfer, actions: list[TransferAction]) -> None:
        """The actions one at a time, under the lock :meth:`_apply` holds: a failed one is
        logged and the next one runs (a failed dial returns the caller)."""
        for action in actions:
            try:
                await self._do(xfer, action)
            except AmiError as exc:
                if isinstance(action, PlayToCaller):
                    raise  # the caller never left the agent: the transfer did not start
                log.warning("transfer.action_failed", transfer=xfer.id,
                            action=type(action).__name__, error=str(exc))
                if isinstance(action, Dial):
                    await self._apply_unlocked(
                        xfer, xfer.machine.target_busy(self.timers.now(), "dial-failed"))

    async def _do(self, xfer: Transfer, action: TransferAction) -> None:
        if isinstance(action, StateChanged):
            await self._state(xfer, action)
        elif isinstance(action, PlayToCaller):
            await self.ami.action({
                "Action": "Redirect", "Channel": xfer.caller_channel,
                "Context": "ivr-transfer-wait", "Exten": "s", "Priority": "1",
                "ExtraChannel": xfer.agent_channel, "ExtraContext": "ivr-transfer-agent",
                "ExtraExten": "s", "ExtraPriority": "1"})
        elif isinstance(action, Dial):
            await self._dial(xfer, action)
        elif isinstance(action, Announce):
            pass  # played by target_agi, which owns the target's FastAGI session
        elif isinstance(action, Connect):
            self._connecting[xfer.caller] = xfer
            # Channel names, never Uniqueids: Bridge() matches by prefix, and "1795.2" is a
            # prefix of another channel's "1795.22" (seen on the switch).
            await self._setvars(xfer.caller, IVR_XFER_TARGET=xfer.target_channel)
            await self._redirect(xfer.caller_channel, "ivr-transfer-connect")
        elif isinstance(action, HangupTarget):
            await self._hangup(xfer.target_uid)
        elif isinstance(action, ReturnCaller):
            agent = xfer.agent_channel if action.to == "agent" and xfer.agent else ""
            await self._setvars(xfer.caller, IVR_XFER_AGENT=agent)
            await self._redirect(xfer.caller_channel, "ivr-transfer-return")

    async def _dial(self, xfer: Transfer, action: Dial) -> None:
        """Originate the target leg under the first of ``xfer.dial_steps`` no node took
        (:mod:`ivr.once`; a new leader's second step: takeover.py); else return the caller."""
        originate = {
            "Action": "Originate", "Channel": action.target, "Context": "ivr-transfer-target",
            "Exten": "s", "Priority": "1", "Async": "true",
            # a little longer than the ring limit: the machine's own deadline cancels first
            "Timeout": str(int((action.timeout + 2) * 1000)),
            "ChannelId": xfer.target_uid,
            "CallerID": f'"{xfer.caller_number}" <{xfer.caller_number}>',
            # an agent or a queue member becomes the caller's agent: the dialplan arms
            # the agent keys on that leg once it confirms (never on an outside number)
            "Variable": f"IVR_XFER_ID={xfer.id},IVR_XFER_KEYS={'yes' if xfer.target.kind in AGENTS else 'no'}",
        }
        if action.target.startswith("Local/"):
            originate["OtherChannelId"] = f"{xfer.target_uid}-2"
        # as_list=False: the reply is "queued"; the outcome comes as Dial*/Hangup events
        send = functools.partial(self.ami.action, originate, as_list=False)
        for step in xfer.dial_steps:
            if await self.once.run(action_key(xfer.call_id, "transfer", f"{xfer.id}/{step}"), send,
                                   still=lambda: not xfer.machine.done) != "skipped":
                return
        log.warning("transfer.dial_taken", transfer=xfer.id, steps=list(xfer.dial_steps))
        await self._apply_unlocked(xfer, xfer.machine.target_busy(self.timers.now(), "dialled-before"))

    async def _state(self, xfer: Transfer, change: StateChanged) -> None:
        state, now = change.state, self.timers.now()
        if state == "answered":
            xfer.answered_at = now
        elif state == "confirmed" and xfer.answered_at is not None:
            self.metrics.confirm_seconds.observe(now - xfer.answered_at)
        if state in OUTCOMES:
            xfer.outcome = state
            self.metrics.outcomes.labels(outcome=state).inc()
        log.info("transfer.state", transfer=xfer.id, state=state, reason=change.reason,
                 target=xfer.target.label, call_id=xfer.call_id)
        # One record per transfer and state (each state comes once): a new leader that takes
        # the transfer over writes the states the switch proves under the same ids (takeover.py).
        self.bus.decided("transfer.state", xfer.call_id, (xfer.id, state), transfer_id=xfer.id, state=state,
                         reason=change.reason, target=xfer.target.label, caller=xfer.caller,
                         agent=xfer.agent_number)
        try:
            await self.ami.action({"Action": "UserEvent", "UserEvent": "IvrTransfer",
                                   "State": state, "Target": xfer.target.label,
                                   "Uniqueid": xfer.caller, "TransferId": xfer.id,
                                   "Reason": change.reason or "-"}, 5.0)
        except AmiError as exc:
            log.warning("transfer.userevent_failed", transfer=xfer.id, error=str(exc))

    async def _setvars(self, channel: str, **variables: str) -> None:
        for name, value in variables.items():
            await self.ami.action({"Action": "Setvar", "Channel": channel,
                                   "Variable": name, "Value": value})

    async def _redirect(self, channel: str, context: str) -> None:
        await self.ami.action({"Action": "Redirect", "Channel": channel, "Context": context,
                               "Exten": "s", "Priority": "1"})

    async def _hangup(self, uniqueid: str, *, linkedid: str = "", gone: tuple[str, ...] = (),
                      why: str = "transfer") -> None:
        """Hang up the leg with this Uniqueid once the switch confirms it (and, with
        ``linkedid``, that it is this call's; with ``gone``, that the channel whose
        hang-up prompted this really is gone): never on the word of one event."""
        await hang_up_confirmed(self.ami, uniqueid, uniqueid=uniqueid, linkedid=linkedid, gone=gone, why=why)


    def _forget(self, xfer: Transfer) -> None:
        self.transfers.pop(xfer.id, None)
        self.timers.remove(xfer.id)
        self._locks.pop(xfer.id, None)
