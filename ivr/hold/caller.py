"""The held caller's side of R4: the FastAGI route ``hold`` (music, reminders, choices,
message, call-back, thank-you), played as the rule machine's actions come due.

:class:`HeldCaller` is a part of :class:`~ivr.hold.service.HoldService` (its base class),
kept apart so each reads on its own: the service detects holds, moves the caller and
keeps the keeper channel (AMI); this is what the caller hears (FastAGI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from ivr.agi.channel import AgiChannel, AgiError, AgiHangup
from ivr.agi.talk import SwitchClock
from ivr.ami.away import taken_over
from ivr.ami.channels import ChannelTracker
from ivr.hold.metrics import HoldMetrics
from ivr.hold.session import (
    CHOICE_DIGITS,
    WAIT_SLICE_MS,
    WAKE,
    HoldSession,
    HoldSettings,
)
from ivr.hold.store import HoldStore, item_id
from ivr.once import Once, action_key
from ivr.rules.callback import (
    ASAP,
    ChosenWindow,
    Window,
    plan_window,
    window_for_key,
    window_menu,
    window_said_back,
)
from ivr.rules.hold import (
    LEAVES_HOLD,
    Announce,
    HoldTimer,
    KeepWaiting,
    OfferChoices,
    Remind,
    RequestCallback,
    TakeMessage,
    ThankCaller,
    hold_stage,
    parse_hold_stage,
)
from ivr.rules.stage import stamp
from ivr.timers import TimerService

log = structlog.get_logger("ivr.hold")


class HeldCaller:
    # Provided by HoldService.
    settings: HoldSettings
    sessions: dict[str, HoldSession]
    timers: TimerService
    tracker: ChannelTracker
    once: Once
    paired: bool  # a controller pair: the kept start is the switch's time (SwitchClock)
    standby_keys: dict[str, float]  # agent Uniqueid -> a hold key / Unhold seen while a standby (timer clock)
    _resume: Callable[[HoldSession], None]
    store: HoldStore
    metrics: HoldMetrics | None
    wall: Callable[[], float]
    _apply: Callable[[HoldSession, list[Any]], None]
    _end: Callable[..., None]
    _emit: Callable[..., None]
    _spawn: Callable[[Any], None]
    _send_user_event: Callable[..., Awaitable[Any]]
    _hang_up_keeper: Callable[[HoldSession], Awaitable[None]]
    _rejoin: Callable[[HoldSession], Awaitable[None]]

    async def agi_hold(self, call: AgiChannel) -> None:
        switch = SwitchClock(self.wall, self.timers.now)  # carried on the hold timer's clock
        if self.paired:
            await switch.sync(call)
        # The kept start is read by the switch's earliest now and written by its latest
        # (SwitchClock): a reminder or the choices across a takeover are never early.
        s = self.sessions.get(call.uniqueid) or await self._taken_over(call, switch.earliest())
        if s is None:
            # Not ours (the controller restarted mid-hold): the dialplan returns the
            # caller to the agent.
            log.warning("hold.agi_unknown", uniqueid=call.uniqueid)
            await call.set_variable("IVR_RESULT", "unknown")
            return
        if switch.synced and not s.on_switch and s.timer.started is not None:
            # This node's own hold, its route's first start: the start on the switch's
            # clock, at the latest, before any stage or reminder key is made of it.
            s.since = stamp(switch.latest() - (self.timers.now() - s.timer.started))
            s.on_switch = True
        s.agi = call
        caller_number = call.caller
        try:
            with structlog.contextvars.bound_contextvars(uniqueid=call.uniqueid, call_id=s.call_id):
                result = await self._held_loop(s, call, caller_number)
        except AgiHangup:
            if s.timer.state == "held":
                self._apply(s, s.timer.hangup(self.timers.now()))
            return
        finally:
            s.agi = None
        if result == "resume":
            self._spawn(self._rejoin(s))  # the dialplan's BridgeAdd runs once this AGI ends
        elif result in ("message", "callback"):
            await self._hang_up_keeper(s)

    async def _music(self, call: AgiChannel) -> None:
        await call.command(f"SET MUSIC ON {self.settings.moh_class}")

    async def _play(self, call: AgiChannel, prompt: str, escape: str = "") -> str | None:
        try:
            return await call.stream_file(self.settings.sound(prompt), escape + WAKE)
        except AgiError as exc:  # a missing prompt must not end the hold
            log.error("hold.prompt_failed", prompt=prompt, error=str(exc))
            return None

    async def _held_loop(self, s: HoldSession, call: AgiChannel, caller_number: str) -> str:
        if s.timer.queue and isinstance(s.timer.queue[0], Announce):  # before the music (R4: the limit)
            action = s.timer.next_action()
            assert isinstance(action, Announce)
            held = s.timer._held(self.timers.now())
            await self._send_user_event(s, action.state, action.count, held)
            log.info("hold.announce", minutes=action.minutes, held_seconds=round(held, 3))
            await self._play(call, self.settings.announce_prompt)
        await self._music(call)
        await self._keep_stage(s, call)
        while True:
            if s.ended:
                # The hold ended while its route still ran: the Redirect's reply was lost and
                # the hold failed (the route began meanwhile), or the switch confirmed the
                # caller's hang-up before this session heard of it. Nothing more is played or
                # announced, no stage is left (no node goes on with it): the dialplan takes
                # the caller back to the agent.
                log.info("hold.route_after_end", outcome=s.ended)
                await self._stage_over(call)
                await call.set_variable("IVR_RESULT", "ended")
                return "ended"
            if s.agent_left:
                # The agent hung up: IVR_HOLD_AGENT is gone, the dialplan queues the caller.
                self._end(s, "agent_left", s.timer._held(self.timers.now()))
                await self._stage_over(call)
                await call.set_variable("IVR_RESULT", "agent_left")
                return "agent_left"
            action = s.timer.next_action()  # the machine picks what the caller gets next
            if isinstance(action, LEAVES_HOLD):
                await self._stage_over(call)
            if action is None:
                s.wake.clear()
                digit = await call.wait_for_digit(WAIT_SLICE_MS)
                if digit and digit != WAKE:
                    self._apply(s, s.timer.digit(self.timers.now(), digit))
                continue
            if isinstance(action, ThankCaller):
                key = await self._announce(s, action)
                self._emit(s, "hold.resume", key, count=action.count, held_seconds=action.held_seconds)
                log.info("hold.resume", held_seconds=round(action.held_seconds, 3), count=action.count)
                await self._play(call, "hold_thanks")
                self._end(s, "resume", action.held_seconds)
                await call.set_variable("IVR_RESULT", "resume")
                return "resume"
            if isinstance(action, (Remind, OfferChoices)):
                choices = isinstance(action, OfferChoices)
                key = await self._announce(s, action)
                await self._keep_stage(s, call)
                if choices:
                    log.info("hold.choices", count=action.count, held_seconds=round(action.held_seconds, 3))
                else:
                    self._emit(s, "hold.reminder", key, count=action.count, held_seconds=action.held_seconds)
                    if self.metrics is not None:
                        self.metrics.reminders.inc()
                escape = CHOICE_DIGITS if s.timer.choices_offered else ""
                digit = await self._play(call, "hold_choices" if choices else "hold_reminder", escape)
                if digit and digit != WAKE:
                    self._apply(s, s.timer.digit(self.timers.now(), digit))
                if not s.timer.next_leaves_hold:
                    await self._music(call)
                continue
            if isinstance(action, KeepWaiting):
                self._choice(s, action)
                s.choice = action.state
                await self._keep_stage(s, call)  # a node going on with the hold records it too
                continue
            if isinstance(action, TakeMessage):
                self._choice(s, action)
                await self._take_message(s, call, caller_number, action.held_seconds)
                return "message"
            if isinstance(action, RequestCallback):
                self._choice(s, action)
                await self._take_callback(s, call, caller_number, action.held_seconds)
                return "callback"

    async def _announce(self, s: HoldSession, action: Any) -> str:
        """UserEvent IvrHold of a reminder, the choices or the thanks: once per hold, tick
        and state, whichever node of a pair plays it (:mod:`ivr.once`); returns its key
        (the records keep the reminder once under it, played again or not)."""
        key = action_key(s.call_id, "hold", f"{s.since}/{action.state}/{action.count}")
        await self.once.run(key, lambda: self._send_user_event(s, action.state, action.count, action.held_seconds),
                            here=True)
        return key

    async def _keep_stage(self, s: HoldSession, call: AgiChannel) -> None:
        """Write where the hold is on the caller's channel (IVR_STAGE): if this node dies,
        [ivr-agi] runs ``hold`` again on the next one, which goes on from there."""
        await call.set_variable("IVR_STAGE", hold_stage(s.since, s.timer.count, s.timer.choices_offered,
                                                        s.via, s.choice))

    @staticmethod
    async def _stage_over(call: AgiChannel) -> None:
        """The hold is over (resume, message, call-back, the agent gone): no hold stage is
        left on the caller, before the thanks, the message or the menu. A node dying from
        here on is not run again as a hold ([ivr-agi]: no stage; the dialplan takes the
        caller back to the agent, or to the queue) and a later hold starts afresh."""
        await call.set_variable("IVR_STAGE", "")

    async def _taken_over(self, call: AgiChannel, now_switch: float) -> HoldSession | None:
        """A hold another node started and died in: rebuilt from the caller's channel
        (IVR_STAGE, IVR_HOLD_AGENT: validated) and the switch's channels (the agent, the
        keeper in the agent's bridge), with the trigger and the caller's choice to wait
        on that the stage kept. ``now_switch``: the clock the stage's start is read by (in
        a pair the switch's earliest now, so the hold's age is never over-estimated; a
        stage of an earlier version, written by its node's wall clock, reads the same way).
        The start is kept as written: the reminders' keys and the records are made of it."""
        found = await taken_over(self.tracker, call, parse=lambda text: parse_hold_stage(text, now_switch),
                                 prefix="hold@", variable="IVR_HOLD_AGENT", feature="hold")
        if found is None:
            return None
        stage, caller, agent, keeper = found
        now = self.timers.now()
        timer = HoldTimer.resumed(self.settings.reminder_interval, self.settings.choices_after,
                                  started=now - stage.age, count=stage.count, choices_offered=stage.choices_offered,
                                  now=now)
        s = HoldSession(caller=caller, agent=agent, via=stage.via, timer=timer, since=stage.start, on_switch=True,
                        choice=stage.choice if timer.choices_offered else "",
                        agent_name=self.settings.agent_name(agent), keeper=keeper.uniqueid, keeper_name=keeper.name)
        self.sessions[caller.uniqueid] = s
        self.timers.add(s.key, timer, lambda actions: self._apply(s, actions))
        log.info("hold.taken_over", uniqueid=call.uniqueid, held_seconds=round(stage.age, 3), count=timer.count,
                 via=s.via)
        # What the dead leader recorded of this hold, written again under the same ids
        # (a duplicate, skipped, if it did): its start (with its trigger), the choices if they
        # were offered, and the caller's choice to wait on if made (timed at the choices: when
        # the key was pressed is not kept).
        since = float(stage.start)
        self._emit(s, "hold.start", step="hold.start", at=since, via=s.via, rebuilt=True)
        if timer.choices_offered:
            at = since + self.settings.choices_after
            self._emit(s, "hold.choices", step="hold.choices", at=at, rebuilt=True)
            if s.choice:
                self._emit(s, "hold.choice", step=f"hold.choice/{s.choice}", at=at, choice=s.choice,
                           rebuilt=True)
        # (both times on this node's timer clock: no other node's clock is compared)
        if (keyed := self.standby_keys.pop(agent.uniqueid, None)) is not None and keyed > now - stage.age + 1.0:
            self._resume(s)  # the agent resumed while no node led: thanks, back to the agent
        return s

    def _choice(self, s: HoldSession, action: KeepWaiting | TakeMessage | RequestCallback) -> None:
        """The caller's choice at the limit (key 1, 2 or 3: the machine's action names it,
        never the caller's input), on record as ``hold.choice``: the leader's decision under
        the keeper's id and the choice, so a node going on with the hold (the stage keeps
        ``keep``) writes the same record, and a key pressed twice is one."""
        choice = action.state
        log.info("hold.choice", choice=choice, held_seconds=round(action.held_seconds, 3))
        self._emit(s, "hold.choice", step=f"hold.choice/{choice}", at=self.wall(), choice=choice,
                   count=action.count, held_seconds=round(action.held_seconds, 3))
        if self.metrics is not None:
            self.metrics.choices.labels(choice).inc()

    async def _take_message(self, s: HoldSession, call: AgiChannel, caller: str, held: float) -> None:
        at = self.wall()
        item = item_id(s.caller.uniqueid, at)
        self._end(s, "message", held)
        self._spawn(self._send_user_event(s, "message", s.timer.count, held))
        base = self.settings.switch_messages_dir or str(self.settings.messages_dir)
        try:
            await self._play(call, "message_instructions")
            await call.exec("Record", f"{base}/{item}.wav,{self.settings.message_silence_seconds},"
                                      f"{self.settings.message_max_seconds},k",
                            timeout=float(self.settings.message_max_seconds) + 5.0)  # its own time
            await self._play(call, "message_saved")
            await call.set_variable("IVR_RESULT", "done")
        finally:  # a caller who hangs up mid-message still leaves one (Record's k option)
            # The event is the message's one source: the call records keep it (through
            # their spool while the database is away); the recording stays a file.
            recorded = self.store.recorded(item)
            log.info("hold.message", item=item, caller=caller, agent=s.agent_name, recorded=recorded)
            self._emit(s, "message.recorded", item=item, caller_number=caller,
                       file=str(self.store.recording(item)), recorded=recorded, held_seconds=round(held, 3))

    async def _take_callback(self, s: HoldSession, call: AgiChannel, caller: str, held: float) -> None:
        at = self.wall()
        item = item_id(s.caller.uniqueid, at)
        self._end(s, "callback", held)
        self._spawn(self._send_user_event(s, "callback", s.timer.count, held))
        chosen = plan_window(Window(ASAP), self._local(at))
        try:
            chosen = await self._choose_window(call)
        finally:
            # The event is the request's one source: the call records keep it as the durable
            # call-back (merged with an open one for this number), the scheduler places it.
            # A caller who hangs up during the menu is called back as soon as possible.
            log.info("hold.callback", item=item, caller=caller, agent=s.agent_name, best_time=chosen.best_time)
            self._emit(s, "callback.requested", item=item, caller_number=caller, best_time=chosen.best_time,
                       not_before=chosen.not_before, target="", held_by=s.agent_name,
                       held_seconds=round(held, 3))
        for prompt in window_said_back(chosen):  # "we will call you back tomorrow between 9 and 12"
            await self._play(call, prompt)
        await call.set_variable("IVR_RESULT", "done")

    def _local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, ZoneInfo(self.settings.timezone))

    async def _choose_window(self, call: AgiChannel) -> ChosenWindow:
        """The caller's best time: the menu of windows, keys 1..n; a timeout or a key not
        offered hears the menu once more, then "as soon as possible" is taken."""
        windows = self.settings.callback_windows
        if len(windows) <= 1:
            return plan_window(windows[0] if windows else Window(ASAP), self._local(self.wall()))
        keys = "".join(str(k) for k in range(1, len(windows) + 1))
        for _ in range(2):
            local = self._local(self.wall())
            digit: str | None = None
            for prompt in window_menu(windows, local):
                digit = await self._play(call, prompt, keys)
                if digit and digit != WAKE:
                    break
            if not digit or digit == WAKE:
                digit = await call.wait_for_digit(int(self.settings.callback_window_timeout * 1000))
            window = window_for_key(windows, digit)
            if window is not None:
                log.info("hold.callback_window", key=digit, window=window.text)
                return plan_window(window, local)
            log.info("hold.callback_window_missing", key=digit or None)
        return plan_window(Window(ASAP), self._local(self.wall()))
