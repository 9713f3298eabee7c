"""R3 a line too faint or too noisy, at the switch (AMI + FastAGI).

The agent starts it (key ``*5`` faint / ``*6`` noisy, features.conf ``ivrfaint`` /
``ivrnoisy``, agent legs only; or ``POST /api/calls/{id}/unclear``). The caller leaves the
agent's bridge exactly as for hold (:mod:`ivr.ami.away`: a keeper Local channel holds the
agent's bridge, ``IVR_UNCLEAR_AGENT`` names the agent, ``Redirect`` to ``ivr-unclear``), and
the FastAGI route ``unclear`` runs the pure :class:`~ivr.rules.unclear.UnclearLine`: "sorry,
I cannot hear you clearly, could you speak a little louder?"; 5 s after it ends without
clear speech, the same again; 5 s later the goodbye ("your line is too faint / noisy, please
call again from another phone, goodbye"); 5 s after the goodbye *ended*, the release, never
sooner (each pause is one ``WAIT FOR DIGIT`` of the remaining time on Asterisk's own timer).
Clear speech at any moment (even over a prompt, which it cuts short), or the agent's key
again (or ``DELETE /api/calls/{id}/unclear``), sends the caller back: the AGI ends and the
dialplan's ``BridgeAdd`` puts the caller into the agent's own bridge, then the keeper goes.
On release the caller is hung up and the keeper too, so the agent's call ends. If the
controller fails mid-script, the dialplan returns the caller to the agent; if the agent hung
up, to the fallback queue.

What "clear" means on the audio, and what was measured: :mod:`ivr.unclear.session`.

Across a node death (issue 17): taken over by the next node's FastAGI route
(:mod:`ivr.unclear.caller`, ``_taken_over``); how, in :mod:`ivr.unclear.session`.

Everything is announced with ``UserEvent: IvrUnclearLine`` (``Stage``: ask, ask-again,
goodbye, release, returned; ``Reason``), published on the event bus (``unclear.stage``,
which the records keep and the dashboard shows), counted (``ivr_unclear_*``) and logged.

Here: the API, the agent's key, taking the caller aside, telling the world. What the caller
says (TALK_DETECT bursts) and hears (the FastAGI route): :mod:`ivr.unclear.caller`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from ivr.agi.channel import AgiChannel
from ivr.ami.away import (
    KEEPER_PREFIX,
    EventWaiters,
    bridge_others,
    caller_of,
    hang_up,
    publish,
    step_out,
)
from ivr.ami.channels import AgentLegCheck, Channel, ChannelTracker, from_agent_leg
from ivr.ami.connection import AmiError
from ivr.ami.link import AmiLink
from ivr.ami.talk import TalkLog
from ivr.events import EventBus
from ivr.once import Once, action_key
from ivr.rules.unclear import REASONS, UnclearLine
from ivr.tasks import TaskSet
from ivr.unclear.caller import UnclearCaller
from ivr.unclear.metrics import UnclearMetrics
from ivr.unclear.session import (
    AGENT_VARIABLE,
    CONTEXT,
    KEEPER_TIMEOUT,
    KEY_EVENT,
    USER_EVENT,
    BadReason,
    NoSuchCall,
    NotAside,
    UnclearError,
    UnclearSession,
    UnclearSettings,
)

log = structlog.get_logger("ivr.unclear")


class UnclearService(UnclearCaller):
    def __init__(self, conn: AmiLink, tracker: ChannelTracker, settings: UnclearSettings, *,
                 bus: EventBus | None = None, metrics: UnclearMetrics | None = None,
                 agent_leg: AgentLegCheck | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, acting: Callable[[], bool] = lambda: True,
                 once: Once | None = None, paired: bool = False) -> None:
        self.conn, self.tracker, self.settings = conn, tracker, settings
        self.paired = paired  # a controller pair: stage times by the switch's clock
        self.talk = TalkLog()  # every caller's recent talk, on a standby too
        self.acting = acting  # False on a pair's standby: the leader takes callers aside
        self.once = once or Once()  # each stage announced once per switch
        self.bus, self.metrics, self.clock, self.wall = bus, metrics, clock, wall
        self.agent_leg: AgentLegCheck = agent_leg or self._bridged_non_caller
        self.sessions: dict[str, UnclearSession] = {}  # caller Uniqueid -> session
        self.standby_keys: dict[str, float] = {}  # agent Uniqueid -> wall time of a key seen as a standby
        self._waiters = EventWaiters()
        self._tasks = TaskSet("unclear.task_failed")

    # -- wiring ---------------------------------------------------------------------
    def attach(self) -> None:
        for name, handler in (("UserEvent", self._on_user_event), ("ChannelTalkingStart", self._on_talk_start),
                              ("ChannelTalkingStop", self._on_talk_stop), ("BridgeEnter", self._waiters.feed),
                              ("OriginateResponse", self._waiters.feed)):
            self.conn.subscribe(name, handler)
        self.talk.attach(self.conn)
        self.tracker.on_gone(self._gone)

    @property
    def agi_routes(self) -> dict[str, Callable[[AgiChannel], Any]]:
        return {"unclear": self.agi_unclear}

    async def close(self) -> None:
        await self._tasks.close()

    # -- the API --------------------------------------------------------------------
    async def start(self, call_id: str, reason: str, via: str = "api") -> dict[str, Any]:
        """Start the script on call ``call_id`` (the caller's Linkedid or Uniqueid)."""
        if reason not in REASONS:
            raise BadReason(f"reason must be one of {', '.join(REASONS)}", reason=reason[:20])
        caller = self._caller_of(call_id)
        if caller.uniqueid in self.sessions:
            raise UnclearError(f"call {call_id} is already in the unclear-line script", call_id=call_id)
        session = await self.start_agent(self._peer(caller), reason, via, caller=caller)
        return self.describe(session)

    async def take_back(self, call_id: str) -> dict[str, Any]:
        """The agent takes the caller back before the script ends (``DELETE`` on the API)."""
        for s in self.sessions.values():
            if call_id in (s.call_id, s.caller.uniqueid):
                self._take_back(s)
                return self.describe(s)
        self._caller_of(call_id)  # NoSuchCall if there is no such call at all
        raise NotAside(f"call {call_id} is not in the unclear-line script", call_id=call_id)

    def _take_back(self, s: UnclearSession) -> None:
        log.info("unclear.take_back", agent=s.agent_name, caller=s.caller.name)
        s.agent_back = True
        s.clear.set()  # ends the prompt or pause in progress (the wake digit)

    def active(self) -> list[dict[str, Any]]:
        return [self.describe(s) for s in self.sessions.values()]

    def describe(self, s: UnclearSession) -> dict[str, Any]:
        return {"call_id": s.call_id, "caller": s.caller.name, "agent": s.agent_name, "reason": s.reason,
                "via": s.via, "state": s.script.state}

    # -- lookups --------------------------------------------------------------------
    def _caller_of(self, call_id: str) -> Channel:
        first = caller_of(self.tracker, call_id)
        if first is None:
            raise NoSuchCall(f"no call {call_id} on the switch", call_id=call_id)
        return first

    def _peer(self, ch: Channel) -> Channel:
        others = bridge_others(self.tracker, ch)
        if len(others) != 1:
            raise UnclearError(f"{ch.name} is not in a two-party call (bridge has {len(others) + 1})",
                               channel=ch.name)
        return others[0]

    def _bridged_non_caller(self, uniqueid: str, channel: str) -> bool:
        """Without the ring monitor's knowledge: a bridged channel that is not the call's
        first (the caller's) channel. The controller passes ``rings.is_agent_leg``."""
        ch = self.tracker.get(uniqueid)
        return ch is not None and bool(ch.bridge) and ch.uniqueid != ch.linkedid

    # -- start ----------------------------------------------------------------------
    async def start_agent(self, agent: Channel, reason: str, via: str, *,
                          caller: Channel | None = None) -> UnclearSession:
        caller = caller or self._peer(agent)
        if caller.uniqueid in self.sessions:
            return self.sessions[caller.uniqueid]
        name = self.settings.agent_name(agent)
        s = UnclearSession(caller=caller, agent=agent, reason=reason, via=via, agent_name=name,
                           script=UnclearLine(reason, self.settings.pause))
        self.sessions[caller.uniqueid] = s
        log.info("unclear.start", reason=reason, via=via, caller=caller.name, agent=name)
        s.keeper = f"{KEEPER_PREFIX}{caller.uniqueid}-{int(self.wall() * 1000)}"  # also its records' id
        self._emit(s, "unclear.start", step="unclear.start", reason=reason, via=via)
        if self.metrics is not None:
            self.metrics.started.labels(reason, via).inc()
        try:
            s.keeper_name = await step_out(
                self.conn, self._waiters, caller=caller.name, agent=agent.name, keeper_id=s.keeper,
                keeper=f"keep@{CONTEXT}", variable=AGENT_VARIABLE, context=CONTEXT, exten="unclear",
                caller_id=f'"unclear" <{caller.uniqueid}>', timeout=KEEPER_TIMEOUT)
        except (AmiError, TimeoutError) as exc:
            log.error("unclear.failed", error=str(exc), caller=caller.name, agent=agent.name)
            self._end(s, "failed")
            await hang_up(self.conn, s.keeper_name, s.keeper)
            raise UnclearError(f"could not take {caller.name} aside: {exc}", call_id=s.call_id) from exc
        return s

    # -- AMI events -----------------------------------------------------------------
    def _on_user_event(self, event: Any) -> None:
        if event.get("UserEvent") != KEY_EVENT:
            return
        uid, channel = str(event.get("Uniqueid", "")), str(event.get("Channel", ""))
        reason = str(event.get("Reason", ""))
        if not from_agent_leg(event, self.agent_leg):
            # Only an agent starts the script; the key is armed on agent legs only, so this
            # is a caller keying the code (or a forged event): nothing happens.
            log.warning("unclear.key_refused", uniqueid=uid, channel=channel)
            if self.metrics is not None:
                self.metrics.keys_refused.inc()
            return
        if not self.acting():  # a standby: the leader acts on the same key; kept for a takeover
            log.debug("unclear.standby_skipped", agent=channel)
            now = self.wall()
            self.standby_keys = {k: t for k, t in self.standby_keys.items() if now - t < 3600} | {uid: now}
            return
        mine = [s for s in self.sessions.values() if s.agent.uniqueid == uid]
        if mine:  # the key again while the caller is aside: the agent takes them back
            self._take_back(mine[0])
            return
        agent = self.tracker.get(uid)
        if agent is None or reason not in REASONS:
            log.warning("unclear.key_ignored", uniqueid=uid, reason=reason[:20])
            return
        self._spawn(self._start_quietly(agent, reason))

    async def _start_quietly(self, agent: Channel, reason: str) -> None:
        try:
            await self.start_agent(agent, reason, "key")
        except UnclearError as exc:
            log.warning("unclear.not_started", agent=agent.name, error=str(exc))

    def _gone(self, ch: Channel, reason: str) -> None:
        for s in list(self.sessions.values()):
            if ch.uniqueid == s.caller.uniqueid:
                s.script.hangup(self.clock())
                self._announce(s, "hungup")
                self._end(s, "hungup")
                self._spawn(hang_up(self.conn, s.keeper_name, s.keeper))
            elif ch.uniqueid == s.agent.uniqueid and not s.ended:
                log.warning("unclear.agent_left", agent=s.agent_name, caller=s.caller.name)
                self._emit(s, "unclear.agent_left", step="unclear.agent_left")

    # -- telling the world ----------------------------------------------------------
    def _announce(self, s: UnclearSession, stage: str, *, released: bool = False, **extra: str) -> None:
        """UserEvent IvrUnclearLine and the bus: once per script and stage, whichever node
        of a pair says it (:mod:`ivr.once`; the caller's route runs on this node)."""
        log.info("unclear.stage", stage=stage, reason=s.reason, **extra)
        if self.metrics is not None:
            self.metrics.stages.labels(stage, s.reason).inc()

        key = action_key(s.call_id, "unclear", f"{s.started or s.keeper}/{stage}")

        async def send() -> None:
            lowered = {k.lower(): v for k, v in extra.items()}
            self._emit(s, "unclear.stage", key, stage=stage, reason=s.reason, **lowered)
            if released:
                self._emit(s, "call.released", key=key, reason=f"unclear-{s.reason}")
            await self._user_event(s, stage, extra)

        self._spawn(self.once.run(key, send, here=True))

    async def _user_event(self, s: UnclearSession, stage: str, extra: dict[str, str]) -> None:
        try:
            await self.conn.action({
                "Action": "UserEvent", "UserEvent": USER_EVENT, "Stage": stage, "Reason": s.reason,
                "Uniqueid": s.caller.uniqueid, "Linkedid": s.call_id, "Agent": s.agent_name,
                "AgentChannel": s.agent.name, "Via": s.via, **extra}, 5.0)
        except AmiError as exc:
            log.warning("unclear.user_event_failed", stage=stage, error=str(exc))

    def _emit(self, s: UnclearSession, kind: str, key: str = "", **data: Any) -> None:
        publish(self.bus, s, kind, key, **data)

    def _end(self, s: UnclearSession, outcome: str) -> None:
        if s.ended:
            return
        s.ended = outcome
        self.sessions.pop(s.caller.uniqueid, None)
        if self.metrics is not None:
            self.metrics.outcomes.labels(outcome, s.reason).inc()

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)
