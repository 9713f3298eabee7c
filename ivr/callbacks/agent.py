"""The agent's FastAGI session of a call-back (route ``callback-agent``; a part of
:class:`~ivr.callbacks.service.CallbackService`, its base class, kept apart so it reads on
its own): who is called back and why, then the agent's key.

The verdict is ``IVR_CB_RESULT`` on the agent's channel: ``accepted`` (the dialplan dials
the customer), ``declined`` (a 2, another key or none) or ``refused`` (no such attempt
under way: a hostile or stale ``IVR_CB_ID``). An empty one means the session was cut
without a verdict (the controller stopped or died mid-announcement, or could not look the
attempt up yet): ``[ivr-callback-agent]`` asks again (``[callbacks] agent_reasks`` times,
``agent_reask_interval`` apart: the Originate's ``IVR_CB_REASKS``/``IVR_CB_REASK_WAIT``;
the agent hears "one moment please", then music), and the node that leads by then answers.
If it is not running the attempt, it adopts it on the spot
(:func:`~ivr.callbacks.recovery.adopt_for_session`: the store has it under way on this very
leg) and plays the announcement again (stage ``agent-resumed``; ``IVR_CB_ANNOUNCED`` on the
channel says a controller began it before). The customer is dialled only by that one
dialplan, after an ``accepted``: never twice for one attempt.

A controller stopping gracefully hands back at once (:meth:`AgentSession.hand_back`, before
the FastAGI server's grace) every session still in the announcement or waiting for the
key: the dialplan asks again and the controller serving then plays the announcement from
the top, instead of this one playing on for its grace and the agent hearing it twice. A
session whose key is in (1 or 2) is not touched: its verdict is set whatever the grace.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from ivr.agi.channel import AgiChannel, AgiError, AgiHangup
from ivr.callbacks.model import NUMBER, Attempt, CallbackSettings
from ivr.callbacks.recovery import NotNow, adopt_for_session
from ivr.catalog import digits_prompts

log = structlog.get_logger("ivr.callbacks")

# The agent leg's ChannelId as the service makes it (``ivrcb<hex>-<n>``); anything else in
# the route's argument (a channel variable: hostile) is refused before it reaches the store.
LEG_ID = re.compile(r"ivrcb[0-9a-f]{1,32}-[0-9]{1,12}")


class AgentSession:
    AGENT_ROUTE = "callback-agent"
    # Provided by CallbackService.
    settings: CallbackSettings
    attempts: dict[str, Attempt]
    local: Callable[[float], datetime]
    _stage: Callable[..., Any]
    # Sessions in the announcement (no key yet), by agent leg: handed back on a graceful stop.
    announcing: dict[str, asyncio.Task[Any]]
    stopping: bool = False

    def hand_back(self) -> int:
        """The controller stops: end every session still in the announcement without a
        verdict (its task cancelled: the FastAGI server closes the socket), so the dialplan
        asks again at once, and stop following its attempt (the controller serving next
        adopts it; none: the next look at the queue ends it ``interrupted``, not an
        outcome this one would guess from the leg's hang-up during its grace). Later
        sessions get no verdict either. Returns how many."""
        self.stopping = True
        for uid, task in self.announcing.items():
            log.info("callbacks.agent_handed_back", uniqueid=uid)
            task.cancel()
            self.attempts.pop(uid, None)
        count = len(self.announcing)
        self.announcing.clear()
        return count

    def announcement(self, att: Attempt) -> list[str]:
        t = self.local(att.callback.requested_at)
        prompts = ["callback_announce", *digits_prompts(att.number),
                   "callback_announce_time", *digits_prompts(f"{t.hour:02d}{t.minute:02d}")]
        if att.callback.held_by.isdigit():
            prompts += ["callback_announce_agent", *digits_prompts(att.callback.held_by)]
        return [*prompts, "callback_announce_menu"]

    async def agent_agi(self, call: AgiChannel) -> None:
        """FastAGI route ``callback-agent``: who is called back and why; 1 accepts."""
        uid = call.headers.get("agi_arg_1", "")
        if not LEG_ID.fullmatch(uid) or call.uniqueid != uid:
            log.warning("callbacks.unknown_agent_leg", uniqueid=call.uniqueid, arg=uid[:80])
            await _verdict(call, "refused")
            return
        try:
            att = self.attempts.get(uid) or await adopt_for_session(self, uid)
        except NotNow as exc:  # no verdict: the dialplan asks again in a second
            log.info("callbacks.agent_not_now", uniqueid=uid, reason=str(exc))
            return
        if att is None or att.done.done() or att.accepted:
            log.warning("callbacks.unknown_agent_leg", uniqueid=uid,
                        reason="no such attempt under way" if att is None else "the attempt has its verdict")
            await _verdict(call, "refused")
            return
        task = asyncio.current_task()
        if self.stopping or task is None:  # no verdict: the controller serving next announces
            return
        self.announcing[uid] = task
        try:
            resumed = await call.get_variable("IVR_CB_ANNOUNCED") == "1"
            await call.set_variable("IVR_CB_ANNOUNCED", "1")
            att.agi = True
            await self._stage(att, "agent-resumed" if resumed else "agent-answered")
            digit: str | None = None
            for prompt in self.announcement(att):
                digit = await call.stream_file(f"{self.settings.sounds}/{prompt}", "12")
                if digit:
                    break
            if not digit:
                digit = await call.wait_for_digit(int(self.settings.agent_confirm * 1000))
            if self.announcing.get(uid) is task:  # the key is in: its verdict is set, never handed back
                del self.announcing[uid]
            if digit != "1" or not NUMBER.match(att.number):  # checked where it is dialled, adopted rows too
                att.resolve("agent-declined")
                await call.set_variable("IVR_CB_RESULT", "declined")
                return
            await call.set_variable("IVR_CB_NUMBER", att.number)
            await call.set_variable("IVR_CB_RING", str(int(self.settings.customer_ring)))
            await call.set_variable("IVR_CB_RESULT", "accepted")
            att.accepted = True
        except (AgiHangup, AgiError):
            att.resolve("agent-declined")
            return
        finally:
            if self.announcing.get(uid) is task:
                del self.announcing[uid]
        await self._stage(att, "agent-accepted")
        await self._stage(att, "customer-dialling")


async def _verdict(call: AgiChannel, value: str) -> None:
    try:
        await call.set_variable("IVR_CB_RESULT", value)
    except (AgiHangup, AgiError) as exc:
        log.info("callbacks.verdict_not_set", uniqueid=call.uniqueid, error=str(exc))
