"""The inbound flow (context ``ivr-inbound``, FastAGI route ``inbound``): R2 and R3.

Answer; choose the greeting by the controller's clock (holiday, daypart, language) and
play it; then listen, driven by the pure :class:`~ivr.rules.silent.SilentCall` script:

* speech (``TALK_DETECT``, see :mod:`ivr.flows.speech`) or a DTMF digit at any moment
  leaves the script: ``IVR_RESULT=agents`` and the dialplan continues at ``ivr-agents``;
* silence: ``silent_prompt2`` 5 s after the greeting ends, ``silent_prompt3`` (the
  apology) 5 s after that ends, and release (``IVR_RESULT=done``, the dialplan hangs up
  with cause 16) 5 s after the apology ends, never sooner.

Prompts are never cut by speech: the caller hears each prompt in full, and speech heard
while a prompt plays hands the caller on the moment that prompt ends (a caller who says
"hello?" over the greeting still hears the company's whole opening, and an echo of our
own prompt cannot cut it). A DTMF digit does interrupt the prompt: a key press is a
deliberate act.

A pause is **one** ``WAIT FOR DIGIT`` for the whole remaining pause (the
:class:`SilentCall`'s ``next_deadline``): it ends at the deadline on Asterisk's own timer,
at once on a caller's key, or when the controller hears speech (AMI
``ChannelTalkingStart``) and wakes it with the wake digit ``D`` (AMI ``PlayDTMF``, see
:mod:`ivr.agi.wake`, the mechanism hold uses; ``D`` is never taken for a caller's key).
So a silent call costs Asterisk about one AGI command per prompt and per pause, not five
a second (the 200 ms polling this replaced saturated the switch at 200 calls: pause p99
3.9 s; see the README's Benchmarks).

If the controller cannot hear the caller (no AMI connection, or it dropped during the
call) the call is never released as silent: after the greeting it goes to the agents.

Each step is logged (with the call's uniqueid bound), announced to the switch with
``UserEvent IvrSilentCall`` (``Stage``: prompt2, prompt3, release, or responded with
``Reason`` speech/dtmf/deaf) and published on the controller's event bus
(``call.arrived``, ``greeting.played``, ``silent.stage``, ``call.released``).
A caller hang-up at any point ends the flow (``AgiHangup``, handled by the server).

A controller pair (issue 17): the flow keeps the stage the call reached on the channel
(``IVR_STAGE``, :func:`~ivr.rules.silent.stage_value`: ``start`` while the greeting plays,
then the last prompt that finished with the time its pause began). If this controller
dies mid-call, the AGI session ends with ``IVR_RESULT`` unset and ``IVR_STAGE`` set, and
``[ivr-agi]`` runs the route again on the next address; that node reads the stage back
(validated: it is a channel variable), and resumes: the pause ends when it would have, a
prompt cut by the death is played again in full, three prompts in all, release never
sooner. Each announcement (UserEvent and bus event) is keyed (:mod:`ivr.once`): it goes out
once per call and stage whichever node makes it. The stage's time is the switch's clock
(:class:`~ivr.agi.talk.SwitchClock`, read once per session), and a caller who spoke while
no node listened (the 1-2 s of a takeover: the detector stays armed, every node follows
its AMI events) is heard by the node that goes on: talk on this channel that began after
the stage was written counts as the caller responding (in a pause: to the agents at once,
no further prompt; during a prompt played again: at its end).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from ivr.agi.channel import AgiChannel
from ivr.agi.talk import SwitchClock
from ivr.agi.wake import WAKE_DIGIT, pause_left_ms
from ivr.events import EventBus
from ivr.flows.speech import DeafDetector, SpeechDetector, SpeechWatch
from ivr.greeting import Greeting, choose_greeting
from ivr.once import Once, action_key
from ivr.rules.silent import Play, Release, RouteToAgent, SilentAction, SilentCall, parse_stage, stage_value
from ivr.sections import Config

log = structlog.get_logger("ivr.inbound")

DTMF_DIGITS = "0123456789*#"
PROMPT_ID = re.compile(r"[A-Za-z0-9_.-]{1,80}")  # a prompt id read back from IVR_GREETING (hostile)


class InboundFlow:
    def __init__(
        self,
        config: Config,
        now: Callable[[], datetime],
        *,
        speech: SpeechDetector | None = None,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
        choose_greeting: Callable[[datetime, Config], Greeting] = choose_greeting,
        once: Once | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.once = once or Once()
        self.wall = wall
        self.config = config
        self.now = now
        self._choose_greeting = choose_greeting
        self.speech: SpeechDetector = speech or DeafDetector()
        self.bus = bus
        self.clock = clock
        self.pause = float(config.silence.pause)
        self.paired = bool(config.cluster.node)  # a controller pair: stage times by the switch's clock
        SilentCall(self.pause)  # bad configuration fails at start-up, not on a call

    def sound(self, prompt_id: str, language: str | None = None) -> str:
        lang = language or self.config.switch.language
        return f"{self.config.prompts.sound_prefix}/{lang}/{prompt_id}"

    async def __call__(self, call: AgiChannel) -> None:
        with structlog.contextvars.bound_contextvars(uniqueid=call.uniqueid, caller=call.caller):
            await call.answer()
            switch = SwitchClock(self.wall, self.clock)
            if self.paired:
                await switch.sync(call)
            # Reading a kept stage: its age by the switch's earliest now; writing one: the
            # latest (SwitchClock): a pause across a takeover is never waited short.
            kept = await self._resume_point(call, switch.earliest())
            resume = None if kept is None or kept[0] == "start" else kept[:2]
            session = _Session(self, call, await self._call_id(call), switch.latest)
            greeting = self.choose_greeting(self.now(), self.config)
            if resume is None:
                session.publish("call.arrived", action_key(session.call_id, "arrived", call.uniqueid),
                                 caller=call.caller, channel=call.channel)
                log.info("inbound.greeting", holiday=greeting.holiday, daypart=greeting.daypart,
                         language=greeting.language, prompts=greeting.prompts)
                await call.set_variable("IVR_GREETING", ",".join(greeting.prompts))
                await call.set_variable("IVR_STAGE", stage_value("start", switch.latest()))
            else:
                log.info("inbound.resumed", stage=resume[0], pause_age=round(resume[1], 3))
                assert kept is not None
                await session.greeting_played_before(resume[0], kept[2], greeting.language)
            # Talk since the kept stage was written counts (a takeover); only when the stage
            # times are the switch's, as the talk's are. The time kept is the writer's latest
            # (a round trip and a ms past the truth at most): talk that began in between was
            # the writer's to hear, alive and listening then.
            since = kept[2] if kept is not None and switch.synced else None
            async with self.speech.listen(call, since=since) as watch:
                result = await session.run(greeting.prompts, greeting.language, watch, resume)
            await call.set_variable("IVR_STAGE", "")  # the script is over: nothing to resume
            await call.set_variable("IVR_RESULT", result)

    async def _resume_point(self, call: AgiChannel, now: float) -> tuple[str, float, float] | None:
        """The stage another controller reached on this call, how long ago its pause began
        and when it was written (``now``'s clock: the switch's in a pair, its earliest
        possible reading, so the age is never over-estimated); None for a new
        call (or a stage that does not hold up: start afresh, which can only make the
        script longer, never release sooner)."""
        text = await call.get_variable("IVR_STAGE")
        if not text:
            return None
        try:
            stage, age = parse_stage(text, now)
        except ValueError as exc:
            log.warning("inbound.stage_refused", error=str(exc))
            return None
        return stage, age, float(text.partition("@")[2])

    def choose_greeting(self, at: datetime, config: Config) -> Greeting:
        return self._choose_greeting(at, config)

    async def _call_id(self, call: AgiChannel) -> str:
        """The call's Linkedid (what the event bus keys calls by), if anyone listens."""
        if self.bus is None:
            return call.uniqueid
        return await call.get_variable("CHANNEL(linkedid)") or call.uniqueid


class _Session:
    """One call's run through the silent-call script."""

    def __init__(self, flow: InboundFlow, call: AgiChannel, call_id: str, wall: Callable[[], float]) -> None:
        """``wall``: the clock the kept stage's times are written by (in a pair, the
        switch's, :meth:`~ivr.agi.talk.SwitchClock.latest`)."""
        self.flow, self.call, self.call_id, self.wall = flow, call, call_id, wall

    def publish(self, kind: str, key: str = "", **data: Any) -> None:
        """``key``: the action's :mod:`ivr.once` key; the event is recorded once under it
        by the node that says it, whichever (a resumed script says nothing twice)."""
        if self.flow.bus is None:
            return
        if key:
            self.flow.bus.keyed(kind, self.call_id, key, uniqueid=self.call.uniqueid, **data)
        else:
            self.flow.bus.emit(kind, self.call_id, uniqueid=self.call.uniqueid, **data)

    def decided(self, kind: str, at: float | None = None, **data: Any) -> None:
        """A record of the leader's, under an id made of the caller's Uniqueid and ``kind``:
        a node going on with the script after the leader's death can write it again."""
        if self.flow.bus is not None:
            self.flow.bus.decided(kind, self.call_id, (self.call.uniqueid, kind), at=at,
                                  uniqueid=self.call.uniqueid, **data)

    async def greeting_played_before(self, stage: str, kept_at: float, language: str) -> None:
        """Going on with a script whose node died: its ``greeting.played``, which the dead
        node published just before it wrote the stage ``greeting`` (so at that stage's time,
        the prompts from ``IVR_GREETING``). A later stage does not tell when the greeting was
        played: if it is not on record, the records count it lost (``leader_died``)."""
        if self.flow.bus is None:
            return
        prompts = (await self.call.get_variable("IVR_GREETING") or "").split(",") if stage == "greeting" else []
        if prompts and all(PROMPT_ID.fullmatch(p) for p in prompts):
            self.decided("greeting.played", at=kept_at, prompts=prompts, language=language, rebuilt=True)
        else:
            self.flow.bus.unrebuilt("greeting.played", self.call_id, (self.call.uniqueid, "greeting.played"),
                                    reason="greeting-time-unknown" if stage != "greeting" else "greeting-unreadable")

    async def announce(self, stage: str, **extra: str) -> None:
        """Once per call and stage, whichever node of a pair says it (:mod:`ivr.once`)."""
        fields = "".join(f",{k}: {v}" for k, v in extra.items())
        log.info("inbound.silent_stage", stage=stage, **extra)

        key = action_key(self.call_id, "silent", stage)

        async def send() -> None:
            await self.call.exec("UserEvent", f"IvrSilentCall,Stage: {stage}{fields}")
            self.publish("silent.stage", key, stage=stage, **extra)
            if stage == "release":
                self.publish("call.released", key, reason="silent")

        await self.flow.once.run(key, send, here=True)

    async def keep_stage(self, script: SilentCall, stage: str) -> None:
        """A pause began after ``stage``'s prompt: write it on the channel (IVR_STAGE)."""
        assert script.pause_started is not None
        began = self.wall() - (self.flow.clock() - script.pause_started)
        await self.call.set_variable("IVR_STAGE", stage_value(stage, began))

    async def play(self, prompts: Sequence[str], language: str) -> str | None:
        """Play prompts in full; a DTMF digit stops them and is returned."""
        for prompt in prompts:
            digit = await self.call.stream_file(self.flow.sound(prompt, language), DTMF_DIGITS)
            if digit:
                return digit
        return None

    async def wait(self, script: SilentCall, watch: SpeechWatch) -> str | None:
        """Wait out the current pause in one command; return a digit if one is pressed,
        else None (the deadline came, or speech was heard: ``watch.heard``)."""
        deadline = script.next_deadline
        assert deadline is not None
        while not watch.heard.is_set():
            remaining_ms = pause_left_ms(deadline, self.flow.clock())
            if remaining_ms <= 0:
                return None
            woken = asyncio.Event()
            waker = asyncio.ensure_future(self._wake_on_speech(watch, woken))
            try:
                digit = await self.call.wait_for_digit(remaining_ms)
            finally:
                woken.set()
                waker.cancel()
            if digit and digit != WAKE_DIGIT:
                return digit
            # The deadline, speech (woken), or a stale wake digit: the loop tells which.
        return None

    async def _wake_on_speech(self, watch: SpeechWatch, woken: asyncio.Event) -> None:
        await watch.heard.wait()
        await self.flow.speech.wake_until(self.call.channel, woken)

    def after_prompt(self, script: SilentCall, stage: str, digit: str | None,
                     watch: SpeechWatch) -> list[SilentAction]:
        return script.after_prompt(self.flow.clock(), stage, digit=digit, heard=watch.heard.is_set(),
                                   reliable=watch.reliable)

    async def run(self, greeting: Sequence[str], language: str, watch: SpeechWatch,
                  resume: tuple[str, float] | None = None) -> str:
        """The script from the greeting on (or from the stage another controller reached,
        ``resume``: stage, seconds since its pause began); returns the IVR_RESULT
        ("agents" or "done")."""
        if resume is not None:
            script = SilentCall.resumed(self.flow.pause, resume[0], self.flow.clock() - resume[1])
            actions: list[SilentAction] = []
        else:
            script = SilentCall(self.flow.pause)
            digit = await self.play(greeting, language)
            log.info("inbound.greeting_played", interrupted_by=digit)
            self.decided("greeting.played", prompts=list(greeting), language=language)
            actions = self.after_prompt(script, "greeting", digit, watch)
            if not actions:
                await self.keep_stage(script, "greeting")
        while True:
            if not actions:  # in a pause: wait for its end, a digit or speech
                digit = await self.wait(script, watch)
                actions = script.after_pause(self.flow.clock(), digit=digit, heard=watch.heard.is_set(),
                                             reliable=watch.reliable)
                continue
            action = actions[0]  # SilentCall returns one action at a time
            if isinstance(action, RouteToAgent):
                await self.announce("responded", Reason=action.reason, From=action.stage)
                return "agents"
            if isinstance(action, Release):
                await self.announce("release")
                return "done"
            assert isinstance(action, Play)
            await self.announce(action.stage)
            digit = await self.play([action.prompt], language)
            actions = self.after_prompt(script, action.stage, digit, watch)
            if not actions:
                await self.keep_stage(script, action.stage)
