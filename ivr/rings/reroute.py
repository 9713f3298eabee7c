"""Re-route (:class:`Rerouting`, a base of :class:`~ivr.rings.monitor.RingMonitor`): when
a leg's watch says so, the call moves on, to the re-route target through ivr-agents
``reroute`` (once per call), or to the hunt's next agent by ending this leg."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ivr.ami.confirm import channel_facts, hang_up_confirmed
from ivr.ami.connection import AmiConnection, AmiError
from ivr.rings.legs import AGENTS_CONTEXT, Leg
from ivr.tasks import TaskSet

log = structlog.get_logger("ivr.rings")

REROUTE_EXTEN = "reroute"  # ivr-agents.conf: hunts IVR_REROUTE_TARGET, then the fallback queue
NO_ANSWER_CAUSE = "19"  # AST_CAUSE_NO_ANSWER: Dial() reports NOANSWER and hunts on


class Rerouting:
    # Provided by RingMonitor.
    conn: AmiConnection
    _redirected: set[str]  # linkedids already moved to the reroute target
    _tasks: TaskSet
    _emit: Callable[..., None]

    def _reroute(self, leg: Leg, target: str) -> None:
        """Move the call on. With a target (first time on this call): redirect the caller
        to ivr-agents ``reroute``, which hunts the target; Dial()/Queue() end and drop the
        ringing leg. Otherwise, or if the call was moved there already (no loop), stop
        ringing this agent: Dial() sees NO ANSWER and the hunt goes on; a queue rings its
        other members."""
        leg.rerouted = True
        redirect = bool(target and leg.caller and leg.linkedid not in self._redirected)
        if redirect:
            self._redirected.add(leg.linkedid)
        log.info("ring.reroute", agent=leg.agent, channel=leg.channel, uniqueid=leg.uniqueid,
                 target=target if redirect else "next")
        self._emit("ring.reroute", leg, decided=True, target=target if redirect else "next")
        action = {"Action": "Redirect", "Channel": leg.caller, "Context": AGENTS_CONTEXT,
                  "Exten": REROUTE_EXTEN, "Priority": "1"}

        async def move_on() -> None:
            if not redirect:  # the ringing leg goes once the switch confirms it is this call's
                await hang_up_confirmed(self.conn, leg.uniqueid, uniqueid=leg.uniqueid, linkedid=leg.linkedid,
                                        cause=NO_ANSWER_CAUSE, why="ring reroute")
                return
            try:
                # Moving a caller is as final as a hang-up: only this call's caller.
                facts = await channel_facts(self.conn, leg.caller)
                if facts is None or facts.linkedid != leg.linkedid:
                    log.warning("ring.reroute_refused", channel=leg.caller, expected=leg.linkedid,
                                found=facts.linkedid if facts else "no such channel")
                    return
                await self.conn.action({**action, "Channel": facts.name or leg.caller}, 5.0)
            except AmiError as exc:
                log.warning("ring.reroute_failed", channel=action["Channel"], error=str(exc))

        self._tasks.spawn(move_on())
