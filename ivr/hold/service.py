"""R4 hold at the switch: detection, music, reminders, choices, thanks (AMI + FastAGI).

How the held caller hears the reminders (measured on the embedded Asterisk 22):

* **Chosen: the caller leaves the agent's bridge for a hold context the controller
  drives** (the mechanism is in :mod:`ivr.ami.away`, shared with the unclear-line rule).
  On hold the controller originates a *keeper* Local channel whose ;1 half
  joins the agent's bridge (``Originate ... Application: BridgeAdd``), so the bridge and
  the agent's call stay up; then it sets ``IVR_HOLD_AGENT`` on the caller and
  ``Redirect``\\ s the caller to ``ivr-hold,held`` (asterisk/ivr-hold.conf), which runs
  FastAGI route ``hold``. There the controller plays music (``SET MUSIC ON``), each
  reminder and the choices (``STREAM FILE``), reads the caller's digit directly, records
  a message (``Record``) and plays the thank-you; then the AGI ends and the dialplan puts
  the caller back into the agent's bridge (``BridgeAdd``); only after the caller's
  ``BridgeEnter`` is the keeper hung up. Measured: redirect to music in 3 ms, the
  caller rejoins the *same* bridge and the agent's call is never dropped. In the 95-s
  real-switch test the reminder, choices and reminder started 29.977, 59.972 and 89.971 s
  after the start event (the start event then went out after the timer's t0; it now
  goes out first) and the thank-you at 95.009 s for a resume asked at 95 s.
* **The controller's clock decides when** (the :class:`~ivr.rules.hold.HoldTimer` under
  the :class:`~ivr.timers.TimerService`), not a dialplan loop: the AGI session
  waits in ``WAIT FOR DIGIT`` with music on, and the controller wakes it with AMI
  ``PlayDTMF`` ``Receive: true`` of the digit ``D`` (a digit phones do not send), which
  ends the wait, or interrupts a prompt in progress (``D`` is an escape digit of every
  prompt). Measured: PlayDTMF to the next AGI command under 1 ms; so reminders land
  within a few ms of hold start + 30 s, and the agent can resume at any moment, even
  mid-reminder (the reminder stops, the thank-you follows at once).
* Why not the alternatives: a Local channel looping ``MusicOnHold(default,30)`` /
  ``Playback`` joined to the held caller's bridge works (ASTERISK.md), but its timing is
  the dialplan's, the agent hears the reminders too, the caller's digits at the choices
  reach the agent, and the agent is back in the bridge before the thank-you has been
  played; and it needs the agent's phone to hold (an HTTP or feature-code hold has no
  ``Hold`` of its own). ``ChanSpy`` whisper/barge stops the caller's music for good
  (ASTERISK.md), and ``PERIODIC_HOOK`` needs ``live_dangerously``.

Hold is detected three ways, all ending in :meth:`HoldService.hold_agent`:
AMI ``Hold`` on the agent's channel (a phone's hold button, a ``sendonly`` re-INVITE;
``Unhold`` resumes), ``UserEvent IvrHoldKey`` from the agent's channel (the feature code
``ivrhold`` of asterisk/features.conf, which toggles), and :meth:`HoldService.hold` /
:meth:`HoldService.resume` (the HTTP API, by call id = the caller's Linkedid).
The switch arms the key on agent legs only (ivr-globals.conf ``[ivr-agent-keys]``); an
``IvrHoldKey`` from any channel the ``agent_leg`` check does not know as an agent's leg
(the ring monitor's, in the controller) is refused, logged (``hold.key_refused``) and
counted (``ivr_hold_keys_refused_total``).

After the choices (decided here): **1** keeps waiting (music, reminders go on); **2**
records a message (``message_instructions``, ``Record`` until ``#`` or 3 s of silence,
``message_saved``) and **3** registers a call-back (``callback_confirm``): in both the
caller's call then ends, the keeper is hung up (so the agent's call ends too) and the
agent is told (``UserEvent IvrHold`` State ``message``/``callback``, the EventBus, the
log). If the agent hangs up while the caller is held, the caller goes to the fallback
queue (ivr-hold.conf), never to silence. If the controller fails mid-hold, the dialplan
returns the caller to the agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from ivr.agi.channel import AgiChannel
from ivr.agi.wake import wake
from ivr.ami.away import (
    KEEPER_PREFIX,
    EventWaiters,
    bridge_others,
    caller_of,
    hang_up,
    publish,
    rejoined,
    step_out,
)
from ivr.ami.channels import AgentLegCheck, Channel, ChannelTracker, configured_agent_leg, from_agent_leg
from ivr.ami.confirm import really_gone
from ivr.ami.connection import AmiError
from ivr.ami.link import AmiLink
from ivr.events import EventBus
from ivr.hold.caller import HeldCaller
from ivr.hold.metrics import HoldMetrics
from ivr.hold.session import (
    HOLD_CONTEXT,
    KEEPER_TIMEOUT,
    HoldError,
    HoldSession,
    HoldSettings,
    NoSuchCall,
    NotHeld,
)
from ivr.hold.store import HoldStore
from ivr.once import Once
from ivr.rules.hold import (
    Abandoned,
    AlertAgent,
    Announce,
    HoldStarted,
    KeepWaiting,
    OfferChoices,
    Remind,
    RequestCallback,
    TakeMessage,
    ThankCaller,
)
from ivr.rules.stage import stamp
from ivr.tasks import TaskSet
from ivr.timers import TimerService

__all__ = ["HoldError", "HoldService", "HoldSession", "HoldSettings", "NoSuchCall", "NotHeld"]

log = structlog.get_logger("ivr.hold")

PENDING_MAX = 120.0  # s: a hold pressed before the caller joined waits this long for them

class HoldService(HeldCaller):
    def __init__(
        self,
        conn: AmiLink,
        tracker: ChannelTracker,
        timers: TimerService,
        settings: HoldSettings,
        *,
        bus: EventBus | None = None,
        metrics: HoldMetrics | None = None,
        wall: Callable[[], float] = time.time,
        agent_leg: AgentLegCheck | None = None,
        acting: Callable[[], bool] = lambda: True,
        once: Once | None = None,
        paired: bool = False,
    ) -> None:
        self.conn, self.tracker, self.timers, self.settings = conn, tracker, timers, settings
        self.paired = paired  # a controller pair: the kept start is a switch-clock time
        self.acting = acting  # False on a pair's standby: the leader holds, not this node
        self.once = once or Once()  # reminders, choices, thanks: once per switch
        self.standby_keys: dict[str, float] = {}  # agent Uniqueid -> a key/Unhold seen as standby (timers.now())
        # agent Uniqueid -> (via, wall time): held before the caller was bridged to them
        self.pending: dict[str, tuple[str, float]] = {}
        self.bus, self.metrics, self.wall = bus, metrics, wall
        # Which channels may use the agent's hold key: by default the configured agents'
        # devices; the controller passes its ring monitor's view (every dialled agent leg).
        self.agent_leg = agent_leg or configured_agent_leg(settings.agents)
        self.store = HoldStore(settings.messages_dir)
        self.sessions: dict[str, HoldSession] = {}  # caller Uniqueid -> session
        self._waiters = EventWaiters()
        self._tasks = TaskSet("hold.task_failed")

    # -- wiring ---------------------------------------------------------------------
    def attach(self) -> None:
        """Subscribe to the connection (after ``tracker.attach``)."""
        try:
            self.store.prepare()
        except OSError as exc:  # reported; holding still works, only messages would fail
            log.error("hold.messages_dir_unusable", dir=str(self.settings.messages_dir), error=str(exc))
        for name, handler in (("Hold", self._on_hold), ("Unhold", self._on_unhold),
                              ("UserEvent", self._on_user_event), ("BridgeEnter", self._on_bridge_enter),
                              ("OriginateResponse", self._on_event)):
            self.conn.subscribe(name, handler)
        self.tracker.on_gone(self._gone)

    @property
    def agi_routes(self) -> dict[str, Callable[[AgiChannel], Any]]:
        return {"hold": self.agi_hold}

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            self.timers.remove(session.key)
        await self._tasks.close()

    # -- the API --------------------------------------------------------------------
    async def hold(self, call_id: str) -> dict[str, Any]:
        """Put call ``call_id`` (the caller's Linkedid or Uniqueid) on hold."""
        caller = self._caller_of(call_id)
        if caller.uniqueid in self.sessions:
            raise HoldError(f"call {call_id} is already on hold", call_id=call_id)
        agent = self._peer(caller)
        session = await self.hold_agent(agent, "api", caller=caller)
        return self.describe(session)

    async def resume(self, call_id: str) -> dict[str, Any]:
        session = self._session_of(call_id)
        self._resume(session)
        return self.describe(session)

    def held(self) -> list[dict[str, Any]]:
        return [self.describe(s) for s in self.sessions.values()]

    def describe(self, s: HoldSession) -> dict[str, Any]:
        held = s.timer._held(self.timers.now()) if s.timer.started is not None else 0.0
        return {"call_id": s.call_id, "caller": s.caller.name, "agent": s.agent_name, "via": s.via,
                "state": s.timer.state, "count": s.timer.count, "held_seconds": round(held, 3),
                "choice": s.choice or None}

    # -- lookups --------------------------------------------------------------------
    def _caller_of(self, call_id: str) -> Channel:
        first = caller_of(self.tracker, call_id)
        if first is None:
            raise NoSuchCall(f"no call {call_id} on the switch", call_id=call_id)
        return first

    def _session_of(self, call_id: str) -> HoldSession:
        for s in self.sessions.values():
            if call_id in (s.call_id, s.caller.uniqueid):
                return s
        self._caller_of(call_id)  # NoSuchCall if the call does not exist at all
        raise NotHeld(f"call {call_id} is not on hold", call_id=call_id)

    def _peer(self, ch: Channel) -> Channel:
        others = bridge_others(self.tracker, ch)
        if len(others) != 1:
            raise HoldError(f"{ch.name} is not in a two-party call (bridge has {len(others) + 1})",
                            channel=ch.name)
        return others[0]

    # -- hold -----------------------------------------------------------------------
    async def hold_agent(self, agent: Channel, via: str, *, caller: Channel | None = None) -> HoldSession:
        """The agent on ``agent`` holds the party bridged to them."""
        caller = caller or self._peer(agent)
        if caller.uniqueid in self.sessions:
            return self.sessions[caller.uniqueid]
        timer = self.settings.timer()
        name = self.settings.agent_name(agent)
        # The start as IVR_STAGE keeps it: the hold's records and its reminders' keys use it
        # (in a pair, the route puts it on the switch's clock before it keeps a stage).
        session = HoldSession(caller=caller, agent=agent, via=via, timer=timer, agent_name=name,
                              since=stamp(self.wall()))
        # The keeper's id (the ChannelId of the Originate) names this hold in its records too.
        session.keeper = f"{KEEPER_PREFIX}{caller.uniqueid}-{int(self.wall() * 1000)}"
        self.sessions[caller.uniqueid] = session
        self._apply(session, timer.start(self.timers.now()))
        self.timers.add(session.key, timer, lambda actions: self._apply(session, actions))
        # The start event goes out before the keeper's Originate, so its Asterisk timestamp
        # is the hold's t0 within a few ms (the reminders are measured from it).
        await self._send_user_event(session, "start", 0, 0.0)
        try:
            await self._move_caller_out(session)
        except (AmiError, TimeoutError) as exc:
            # The caller is still with the agent (or back with them through the dialplan).
            log.error("hold.failed", error=str(exc), caller=caller.name, agent=agent.name)
            self._end(session, "failed")
            await self._hang_up_keeper(session)
            raise HoldError(f"could not put {caller.name} on hold: {exc}", call_id=session.call_id) from exc
        return session

    async def _move_caller_out(self, s: HoldSession) -> None:
        s.keeper_name = await step_out(
            self.conn, self._waiters, caller=s.caller.name, agent=s.agent.name, keeper_id=s.keeper,
            keeper=f"keep@{HOLD_CONTEXT}", variable="IVR_HOLD_AGENT", context=HOLD_CONTEXT, exten="held",
            caller_id=f'"hold" <{s.caller.name}>', timeout=KEEPER_TIMEOUT)

    def _resume(self, s: HoldSession) -> None:
        if s.timer.state != "held":
            raise NotHeld(f"call {s.call_id} is not on hold ({s.timer.state})", call_id=s.call_id)
        self._apply(s, s.timer.resume(self.timers.now()))

    # -- AMI events -----------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        self._waiters.feed(event)

    def _on_hold(self, event: Any) -> None:
        agent = self.tracker.get(event.get("Uniqueid", ""))
        # (a channel in [ivr-agi] is one the controller itself is talking to: never an agent)
        if agent is None or agent.context in (HOLD_CONTEXT, "ivr-agi") or agent.uniqueid == agent.linkedid:
            return  # not an agent leg (the caller's own phone holding is not rule R4)
        if any(s.agent.uniqueid == agent.uniqueid for s in self.sessions.values()):
            return
        self._spawn(self._hold_quietly(agent, "phone"))

    def _on_bridge_enter(self, event: Any) -> None:
        self._waiters.feed(event)
        bridge = event.get("BridgeUniqueid", "")
        for agent_uid, (via, at) in list(self.pending.items()):
            agent = self.tracker.get(agent_uid)
            if agent is None or self.wall() - at > PENDING_MAX:
                self.pending.pop(agent_uid, None)
            elif bridge and agent.bridge == bridge and bridge_others(self.tracker, agent):
                self.pending.pop(agent_uid, None)  # the caller joined a held agent: R4 starts now
                log.info("hold.pending_started", agent=agent.name, via=via, waited=round(self.wall() - at, 3))
                self._spawn(self._hold_quietly(agent, via))

    def _on_unhold(self, event: Any) -> None:
        if self.pending.pop(event.get("Uniqueid", ""), None) is not None:
            return  # resumed before the caller was bridged: nothing to hold
        if not self.acting():
            self._standby_key(event.get("Uniqueid", ""))
        self._resume_agent(event.get("Uniqueid", ""))

    def _standby_key(self, agent_uid: str) -> None:
        """A standby remembers an agent's hold key or Unhold: if it takes over that agent's
        hold (the leader died in between), the hold was resumed meanwhile."""
        now = self.timers.now()
        self.standby_keys = {k: t for k, t in self.standby_keys.items() if now - t < 3600}
        self.standby_keys[agent_uid] = now

    def _on_user_event(self, event: Any) -> None:
        if event.get("UserEvent") != "IvrHoldKey":
            return
        uid = event.get("Uniqueid", "")
        if not from_agent_leg(event, self.agent_leg):
            # Not an agent's leg (a caller's channel never has the key armed: if one sends
            # it, the switch is misconfigured or the event is forged). Only an agent holds.
            log.warning("hold.key_refused", uniqueid=uid, channel=event.get("Channel", ""),
                        linkedid=event.get("Linkedid", ""))
            if self.metrics is not None:
                self.metrics.keys_refused.inc()
            return
        if any(s.agent.uniqueid == uid and s.timer.state == "held" for s in self.sessions.values()):
            self._resume_agent(uid)
            return
        if self.pending.pop(uid, None) is not None:
            return  # the key again before the caller was bridged: the hold is called off
        agent = self.tracker.get(uid)
        if agent is not None:
            self._spawn(self._hold_quietly(agent, "feature"))

    def _resume_agent(self, agent_uid: str) -> None:
        for s in list(self.sessions.values()):
            if s.agent.uniqueid == agent_uid and s.timer.state == "held":
                self._resume(s)

    async def _hold_quietly(self, agent: Channel, via: str) -> None:
        if not self.acting():  # a standby: the leader acts on the same event
            log.debug("hold.standby_skipped", via=via, agent=agent.name)
            if via == "feature":
                self._standby_key(agent.uniqueid)
            return
        if not bridge_others(self.tracker, agent):
            # Held (or the key pressed) while the caller still hears the agent's number, before
            # the two are bridged: the hold starts when the caller joins (unless resumed first).
            self.pending[agent.uniqueid] = (via, self.wall())
            log.info("hold.pending", via=via, agent=agent.name, reason="the caller is not bridged yet")
            return
        try:
            await self.hold_agent(agent, via)
        except HoldError as exc:
            log.warning("hold.not_started", via=via, agent=agent.name, error=str(exc))

    def _gone(self, ch: Channel, reason: str) -> None:
        if reason == "hangup" and any(ch.uniqueid in (s.caller.uniqueid, s.agent.uniqueid)
                                      for s in self.sessions.values()):
            # One Hangup event is not enough to end a hold (it can be forged): ask the switch.
            self._spawn(self._gone_if_confirmed(ch))
            return
        self._gone_confirmed(ch)  # "vanished": the switch's own channel list said so

    async def _gone_if_confirmed(self, ch: Channel) -> None:
        try:
            gone = await really_gone(self.conn, ch.uniqueid)
        except AmiError as exc:
            log.warning("hold.hangup_unconfirmed", uniqueid=ch.uniqueid, error=str(exc))
            return
        if not gone:
            log.warning("hold.hangup_event_refused", uniqueid=ch.uniqueid, channel=ch.name,
                        reason="the switch still has the channel (forged or stale event)")
            return
        self._gone_confirmed(ch)

    def _gone_confirmed(self, ch: Channel) -> None:
        self.pending.pop(ch.uniqueid, None)
        for s in list(self.sessions.values()):
            if ch.uniqueid == s.caller.uniqueid and s.timer.state == "held":
                self._apply(s, s.timer.hangup(self.timers.now()))
            elif ch.uniqueid == s.agent.uniqueid and s.timer.state == "held" and not s.agent_left:
                s.agent_left = True
                log.warning("hold.agent_left", agent=s.agent_name, caller=s.caller.name)
                self._emit(s, "hold.agent_left", step="hold.agent_left")
                self._wake(s)

    # -- actions of the HoldTimer ---------------------------------------------------
    def _apply(self, s: HoldSession, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, HoldStarted):  # its UserEvent is sent first by hold_agent
                log.info("hold.start", via=s.via, caller=s.caller.name, agent=s.agent_name)
                self._emit(s, "hold.start", step="hold.start", via=s.via, at=float(s.since))
            elif isinstance(action, AlertAgent):
                log.warning("hold.alert", agent=s.agent_name, held_seconds=round(action.held_seconds, 3),
                            caller=s.caller.name)
                self._emit(s, "hold.choices", step="hold.choices", count=action.count,
                           held_seconds=action.held_seconds)
            elif isinstance(action, (Announce, Remind, OfferChoices, ThankCaller, KeepWaiting, TakeMessage,
                                     RequestCallback)):
                self._wake(s)  # queued in the timer: the caller's route plays its next_action()
            elif isinstance(action, Abandoned):
                log.info("hold.abandon", caller=s.caller.name, held_seconds=round(action.held_seconds, 3))
                self._user_event(s, action)
                self._emit(s, "hold.abandon", step="hold.abandon", count=action.count,
                           held_seconds=action.held_seconds)
                if self.metrics is not None:
                    self.metrics.abandons.inc()
                self._end(s, "abandon", action.held_seconds)
                self._spawn(self._hang_up_keeper(s))
            self.timers.poke(s.key)

    def _end(self, s: HoldSession, outcome: str, held_seconds: float | None = None) -> None:
        if s.ended:
            return
        s.ended = outcome
        self.timers.remove(s.key)
        self.sessions.pop(s.caller.uniqueid, None)
        if self.metrics is not None and held_seconds is not None:
            self.metrics.durations.labels(outcome).observe(held_seconds)

    def _wake(self, s: HoldSession) -> None:
        s.wake.set()
        if s.agi is not None:
            self._spawn(self._send_wake(s))

    async def _send_wake(self, s: HoldSession) -> None:
        await wake(self.conn, s.caller.name)  # AMI PlayDTMF of WAKE, see ivr.agi.wake

    def _user_event(self, s: HoldSession, action: Any) -> None:
        self._spawn(self._send_user_event(s, action.state, action.count, action.held_seconds))

    async def _send_user_event(self, s: HoldSession, state: str, count: int, held: float) -> None:
        try:
            await self.conn.action({
                "Action": "UserEvent", "UserEvent": "IvrHold", "State": state, "Count": str(count),
                "HeldSeconds": f"{held:.3f}", "Uniqueid": s.caller.uniqueid, "Linkedid": s.call_id,
                "Agent": s.agent_name, "AgentChannel": s.agent.name}, 5.0)
        except AmiError as exc:
            log.warning("hold.user_event_failed", state=state, error=str(exc))

    def _emit(self, s: HoldSession, kind: str, key: str = "", **data: Any) -> None:
        publish(self.bus, s, kind, key, **data)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    async def _hang_up_keeper(self, s: HoldSession) -> None:
        await hang_up(self.conn, s.keeper_name, s.keeper)

    async def _rejoin(self, s: HoldSession) -> None:
        """After the AGI: the dialplan's BridgeAdd puts the caller back; then the keeper
        goes (before that it would leave the agent alone and the bridge would dissolve)."""
        await rejoined(self.conn, self._waiters, s.caller.uniqueid, s.keeper_name, KEEPER_TIMEOUT, s.keeper)
