"""The caller's side of R3's unclear line (:class:`UnclearCaller`, the base of
:class:`~ivr.unclear.service.UnclearService`): what the caller says (the TALK_DETECT
bursts over AMI, clear or not) and hears (the FastAGI route ``unclear``: the script's
prompts and pauses, its stage kept on the channel, a script taken over from a dead node).
The service takes the caller aside and back, and tells the world."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from ivr.agi.channel import AgiChannel, AgiHangup
from ivr.agi.talk import SwitchClock, talk_detect
from ivr.agi.wake import WAKE_DIGIT, pause_left_ms, wake_until
from ivr.ami.away import EventWaiters, hang_up, rejoined, taken_over
from ivr.ami.channels import ChannelTracker
from ivr.ami.link import AmiLink
from ivr.ami.talk import TalkLog
from ivr.rules.unclear import (
    KEPT,
    Release,
    ReturnToAgent,
    Say,
    UnclearAction,
    UnclearLine,
    parse_unclear_stage,
    unclear_stage,
)
from ivr.unclear.session import AGENT_VARIABLE, KEEPER_TIMEOUT, UnclearSession, UnclearSettings

log = structlog.get_logger("ivr.unclear")


class UnclearCaller:
    # Provided by UnclearService.
    conn: AmiLink
    tracker: ChannelTracker
    settings: UnclearSettings
    sessions: dict[str, UnclearSession]
    standby_keys: dict[str, float]
    talk: TalkLog
    paired: bool
    clock: Callable[[], float]
    wall: Callable[[], float]
    _waiters: EventWaiters
    _announce: Callable[..., None]
    _emit: Callable[..., None]
    _end: Callable[[UnclearSession, str], None]
    _spawn: Callable[[Any], None]
    _take_back: Callable[[UnclearSession], None]

    # -- what the caller says (AMI) ---------------------------------------------------

    def _on_talk_start(self, event: Any) -> None:
        s = self.sessions.get(str(event.get("Uniqueid", "")))
        if s is not None and s.listening:
            s.bursts.append({"start": _ts(event), "ms": None})

    def _on_talk_stop(self, event: Any) -> None:
        s = self.sessions.get(str(event.get("Uniqueid", "")))
        if s is None or not s.listening:
            return
        try:
            duration = int(event.get("Duration", ""))
        except ValueError:
            return
        clear = self.settings.is_clear(duration)
        s.bursts.append({"stop": _ts(event), "ms": duration, "clear": clear})
        log.info("unclear.talk_burst", duration_ms=duration, clear=clear, uniqueid=s.caller.uniqueid)
        if clear:
            s.clear.set()

    # -- the caller's FastAGI route -------------------------------------------------
    async def agi_unclear(self, call: AgiChannel) -> None:
        switch = SwitchClock(self.wall, self.clock)
        if self.paired:
            await switch.sync(call)
        s, kept = self.sessions.get(call.uniqueid), None
        # A kept stage is read by the switch's earliest now and written by its latest
        # (SwitchClock): a pause across a takeover is never waited short.
        if s is None and (taken := await self._taken_over(call, switch.earliest())) is not None:
            s, kept = taken
        if s is None:  # not ours, no stage that holds up: the dialplan returns the caller
            log.warning("unclear.agi_unknown", uniqueid=call.uniqueid)
            await call.set_variable("IVR_RESULT", "unknown")
            return
        s.agi = call
        s.started = s.started or f"{switch.now():.3f}"  # a name and a record, no wait: the midpoint
        u = self.settings
        try:
            with structlog.contextvars.bound_contextvars(uniqueid=call.uniqueid, call_id=s.call_id):
                async with talk_detect(call, u.talk_silence_ms, u.clear_threshold):
                    s.listening = True
                    if kept is not None and switch.synced:  # the stage and the talk: switch times
                        self._heard_in_takeover(s, kept)
                    result = await self._run(s, call, switch.latest)
                    s.listening = False
                await call.set_variable("IVR_RESULT", result)  # first: a death now still ends as decided
                await call.set_variable("IVR_STAGE", "")  # the script is over: nothing to go on with
        except AgiHangup:
            return
        finally:
            s.listening = False
            s.agi = None
        if result == "back":
            self._spawn(rejoined(self.conn, self._waiters, s.caller.uniqueid, s.keeper_name, KEEPER_TIMEOUT, s.keeper))
        else:
            await hang_up(self.conn, s.keeper_name, s.keeper)

    async def _run(self, s: UnclearSession, call: AgiChannel, wall: Callable[[], float]) -> str:
        now = self.clock()  # taken back before the script began: no prompt at all
        actions: list[UnclearAction] = self._returned(s, now) if s.clear.is_set() else s.script.start(now)
        await self._keep_stage(s, call, wall)
        while True:
            if s.ended:  # the caller hung up under us
                raise AgiHangup("caller gone")
            if not actions:  # a pause: wait for its end or clear speech
                await self._wait(s, call)
                now = self.clock()
                actions = self._returned(s, now) if s.clear.is_set() else s.script.on_timer(now)
                continue
            action = actions[0]  # UnclearLine returns one action at a time
            if isinstance(action, ReturnToAgent):
                self._announce(s, action.stage, During=action.during, By=action.by)
                self._end(s, "returned")
                return "back"
            if isinstance(action, Release):
                self._announce(s, action.stage, released=True)
                self._end(s, "released")
                return "done"
            assert isinstance(action, Say)
            self._announce(s, action.stage)
            await self._interruptible(s, call.stream_file(self.settings.sound(action.prompt), WAKE_DIGIT), call)
            now = self.clock()
            actions = self._returned(s, now) if s.clear.is_set() else s.script.prompt_finished(now, action.stage)
            await self._keep_stage(s, call, wall)

    async def _keep_stage(self, s: UnclearSession, call: AgiChannel, wall: Callable[[], float]) -> None:
        """Write where the script is on the caller's channel (IVR_STAGE): the first ask,
        or a pause and when it began. If this node dies, the next one goes on from there."""
        state, began = s.script.state, s.script.pause_started
        if state in KEPT and not s.clear.is_set():
            at = wall() - (0.0 if began is None else self.clock() - began)
            await call.set_variable("IVR_STAGE", unclear_stage(s.started, s.reason, state, at))

    async def _taken_over(self, call: AgiChannel, now: float) -> tuple[UnclearSession, float] | None:
        """A script another node began and died in: rebuilt from the caller's channel
        (IVR_STAGE, IVR_UNCLEAR_AGENT: validated) and the switch's channels; with the
        time its stage was written (``now``'s clock: the switch's in a pair)."""
        found = await taken_over(self.tracker, call, prefix="unclear@", variable=AGENT_VARIABLE, feature="unclear",
                                 parse=lambda text: (parse_unclear_stage(text, now), float(text.rsplit("@", 1)[1])))
        if found is None:
            return None
        ((started, reason, state, age), kept), caller, agent, keeper = found
        s = UnclearSession(caller=caller, agent=agent, reason=reason, via="takeover",
                           agent_name=self.settings.agent_name(agent), started=started,
                           script=UnclearLine.resumed(reason, self.settings.pause, state, age, self.clock()),
                           keeper=keeper.uniqueid, keeper_name=keeper.name)
        self.sessions[caller.uniqueid] = s
        log.info("unclear.taken_over", uniqueid=call.uniqueid, state=state, age=round(age, 3), reason=reason)
        self._emit(s, "unclear.start", step="unclear.start", at=float(started), reason=reason, rebuilt=True)
        if self.standby_keys.pop(agent.uniqueid, 0.0) > float(started) + 1.0:
            self._take_back(s)  # the agent keyed again while no node led: back to the agent
        return s, kept

    def _heard_in_takeover(self, s: UnclearSession, kept: float) -> None:
        """Clear speech that ended after the stage was written (switch times): the caller
        answered while no node listened; back to the agent at once."""
        clear = [t for t in self.talk.bursts_since(s.caller.uniqueid, kept) if self.settings.is_clear(t.duration_ms)]
        if clear and not s.clear.is_set():
            log.info("unclear.heard_before", at=clear[0].at, duration_ms=clear[0].duration_ms, since=kept)
            s.bursts.append({"stop": clear[0].at, "ms": clear[0].duration_ms, "clear": True})
            s.clear.set()

    @staticmethod
    def _returned(s: UnclearSession, now: float) -> list[UnclearAction]:
        return s.script.agent_takes_back(now) if s.agent_back else s.script.clear_speech(now)

    async def _wait(self, s: UnclearSession, call: AgiChannel) -> None:
        deadline = s.script.next_deadline
        assert deadline is not None
        while not s.clear.is_set():
            remaining_ms = pause_left_ms(deadline, self.clock())
            if remaining_ms <= 0:
                return
            await self._interruptible(s, call.wait_for_digit(remaining_ms), call)

    async def _interruptible(self, s: UnclearSession, command: Any, call: AgiChannel) -> Any:
        """Run one AGI command; clear speech heard meanwhile ends it with the wake digit."""
        woken = asyncio.Event()

        async def waker() -> None:
            await s.clear.wait()
            await wake_until(self.conn, call.channel, woken)

        task = asyncio.ensure_future(waker())
        try:
            return await command
        finally:
            woken.set()
            task.cancel()


def _ts(event: Any) -> float | None:
    try:
        return float(event["Timestamp"])
    except (KeyError, TypeError, ValueError):
        return None
