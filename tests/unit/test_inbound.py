"""The inbound flow (R2, R3) against a scripted fake AGI channel on a fake clock.

The fake plays each prompt for a known time, answers WAIT FOR DIGIT like Asterisk (to its
timeout, at a key, or at the wake digit the controller sends through the detector when it
hears speech), and makes the caller speak, press a key or hang up at chosen instants, so
every timing of the silent-call script is checked exactly and without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest

from ivr.agi.channel import AgiChannel, AgiHangup, AgiReply
from ivr.agi.wake import PAUSE_GUARD, WAKE_DIGIT
from ivr.config import Config, SilenceConfig
from ivr.events import EventBus
from ivr.flows.inbound import InboundFlow
from ivr.flows.speech import DeafDetector, SpeechSettings, SpeechWatch, TalkDetector
from ivr.greeting import Greeting
from ivr.once import Once
from tests.fakes import BusLog, Clock, FakeAgi, RecordingAmi, idle

PAUSE = 5.0
WAITED = PAUSE + PAUSE_GUARD  # a pause is waited a guard past its deadline (ivr.agi.wake)
WAITED_MS = round(WAITED * 1000)
GREETING = ["hello", "welcome"]
DURATIONS = {"hello": 1.0, "welcome": 3.0, "silent_prompt2": 2.0, "silent_prompt3": 4.0}
AFTERNOON = Greeting(holiday=None, daypart="day", text="", prompts=GREETING, language="zh-CN")
GREETING_END = 4.0  # the call is answered at t=0
WAKE_LATENCY = 0.003  # ChannelTalkingStart -> PlayDTMF -> WAIT FOR DIGIT returns "D"


class FakeCall(FakeAgi):
    """The shared fake FastAGI session with its own caller script on the fake clock: a
    caller who speaks, presses or hangs up at given times, prompts of known lengths."""

    def __init__(self, clock: Clock, *, speech_at: float | None = None, digit_at: float | None = None,
                 hangup_at: float | None = None) -> None:
        super().__init__("1700000000.1", caller="13800000000", channel="Local/caller@test;1", clock=clock)
        self.clock: Clock = clock
        self.speech_at, self.digit_at, self.hangup_at = speech_at, digit_at, hangup_at
        self.watch: SpeechWatch | None = None
        self.variables["CHANNEL(linkedid)"] = "1700000000.0"
        self.plays: list[tuple[str, float, float]] = []  # (prompt id, start, end)
        self.events: list[tuple[float, str]] = []  # UserEvent args, at
        self.waits: list[int] = []  # WAIT FOR DIGIT timeouts, ms
        self.wakes: list[str] = []  # channels the controller woke (PlayDTMF of WAKE_DIGIT)

    def _advance(self, until: float) -> None:
        if self.hung_up or (self.hangup_at is not None and until >= self.hangup_at):
            self.clock.t = max(self.clock.t, self.hangup_at or 0.0)
            self.hung_up = True
            raise AgiHangup("HANGUP")
        if self.speech_at is not None and until >= self.speech_at and self.watch is not None:
            self.watch.mark(self.speech_at)
        self.clock.t = until

    def _digit_before(self, end: float) -> bool:
        return self.digit_at is not None and self.clock.t <= self.digit_at < end

    async def command(self, text: str, timeout: float | None = None) -> AgiReply:
        reply = await super().command(text, timeout)
        self._advance(self.clock.t)  # hung up by now?
        return reply

    async def stream_file(self, prompt: str, escape_digits: str = "", offset: int | None = None) -> str | None:
        await self.command(f'STREAM FILE {prompt} "{escape_digits}"')
        assert "5" in escape_digits and "#" in escape_digits
        start, end = self.clock.t, self.clock.t + DURATIONS[prompt.rsplit("/", 1)[1]]
        if self._digit_before(end):
            assert self.digit_at is not None
            self._advance(self.digit_at)
            self.digit_at = None
            self.plays.append((prompt.rsplit("/", 1)[1], start, self.clock.t))
            return "5"
        self._advance(end)
        self.plays.append((prompt.rsplit("/", 1)[1], start, end))
        return None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        assert timeout_ms > 0
        await self.command(f"WAIT FOR DIGIT {timeout_ms}")
        self.waits.append(timeout_ms)
        end = self.clock.t + timeout_ms / 1000
        if self._digit_before(end):
            assert self.digit_at is not None
            self._advance(self.digit_at)
            self.digit_at = None
            return "5"
        if self.speech_at is not None and self.clock.t <= self.speech_at < end:
            # The caller speaks mid-wait: the detector hears it, and the controller must
            # wake this wait; its tasks do what they will, as on the AMI event.
            self._advance(self.speech_at)
            await idle()
            if self.wakes:
                self._advance(self.speech_at + WAKE_LATENCY)
                return WAKE_DIGIT
        self._advance(end)
        return None

    async def exec(self, app: str, args: str = "", timeout: float | None = None) -> AgiReply:
        reply = await super().exec(app, args, timeout)
        assert app == "UserEvent"
        self.events.append((self.clock.t, args))
        return reply


class FakeDetector:
    def __init__(self, reliable: bool = True) -> None:
        self.reliable = reliable
        self.open = 0
        self.call: FakeCall | None = None

    @asynccontextmanager
    async def listen(self, call: AgiChannel, since: float | None = None) -> AsyncIterator[SpeechWatch]:
        assert isinstance(call, FakeCall)
        call.watch = SpeechWatch(call.uniqueid, reliable=self.reliable)
        self.call = call
        self.open += 1
        try:
            yield call.watch
        finally:
            self.open -= 1

    async def wake_until(self, channel: str, woken: asyncio.Event) -> int:
        assert self.call is not None and channel == self.call.channel
        self.call.wakes.append(channel)
        await woken.wait()
        return 1


def make_flow(clock: Clock, detector: Any = None, bus: EventBus | None = None,
              pause: float = PAUSE) -> InboundFlow:
    config = Config(silence=SilenceConfig(pause=pause))  # zh-CN prompts under "ivr"
    return InboundFlow(config, lambda: datetime(2027, 3, 10, 15, 0),
                       speech=detector or FakeDetector(), bus=bus, clock=clock,
                       choose_greeting=lambda _at, _cfg: AFTERNOON)


def stages(call: FakeCall) -> list[str]:
    return [args.split(",")[1].removeprefix("Stage: ") for _, args in call.events]


async def run(call: FakeCall, **kwargs: Any) -> InboundFlow:
    flow = make_flow(call.clock, **kwargs)
    await flow(call)
    return flow


async def test_silent_caller_gets_three_prompts_then_release_never_sooner() -> None:
    call = FakeCall(Clock(0.0))
    await run(call)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome", "silent_prompt2", "silent_prompt3"]
    _, _, greeting_end = call.plays[1]
    _, p2_start, p2_end = call.plays[2]
    _, p3_start, p3_end = call.plays[3]
    assert greeting_end == GREETING_END
    # Each pause lasts its full length, never less, and at most a millisecond more.
    assert 0 <= p2_start - (greeting_end + WAITED) <= 0.002
    assert 0 <= p3_start - (p2_end + WAITED) <= 0.002
    release_at = next(t for t, args in call.events if "Stage: release" in args)
    assert 0 <= release_at - (p3_end + WAITED) <= 0.002
    assert release_at - greeting_end >= 3 * PAUSE + 2.0 + 4.0 - 1e-9  # pauses + prompts 2, 3
    assert stages(call) == ["prompt2", "prompt3", "release"]
    assert call.variables["IVR_RESULT"] == "done"
    assert call.variables["IVR_GREETING"] == "hello,welcome"
    assert call.commands[0] == "ANSWER"
    # One wait per pause, for the whole pause: no polling, nothing to wake.
    assert call.waits == [WAITED_MS] * 3 and call.wakes == []


async def test_configured_pause_is_used() -> None:
    call = FakeCall(Clock(0.0))
    await run(call, pause=2.5)
    assert call.plays[2][1] == pytest.approx(GREETING_END + 2.5 + PAUSE_GUARD, abs=0.002)


async def test_speech_in_the_first_pause_wakes_the_wait_and_hands_on() -> None:
    call = FakeCall(Clock(0.0), speech_at=GREETING_END + 1.23)
    await run(call)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome"]
    assert call.variables["IVR_RESULT"] == "agents"
    (t, args), = call.events
    assert args == "IvrSilentCall,Stage: responded,Reason: speech,From: pause1"
    assert call.wakes == [call.channel] and call.waits == [WAITED_MS]
    assert t == pytest.approx(GREETING_END + 1.23 + WAKE_LATENCY)


async def test_a_stray_wake_digit_does_not_end_the_pause() -> None:
    """A "D" with no speech heard (a late wake, or a phone that sends D) is not the
    caller's key: the pause goes on to its deadline."""
    strays = [GREETING_END + 1.0]

    class StrayWake(FakeCall):
        async def wait_for_digit(self, timeout_ms: int) -> str | None:
            if strays and self.clock.t <= strays[0] < self.clock.t + timeout_ms / 1000:
                self.waits.append(timeout_ms)
                self._advance(strays.pop())
                return WAKE_DIGIT
            return await super().wait_for_digit(timeout_ms)

    call = StrayWake(Clock(0.0))
    await run(call)
    assert stages(call) == ["prompt2", "prompt3", "release"]
    assert call.waits == [WAITED_MS, WAITED_MS - 1000, WAITED_MS, WAITED_MS]
    assert call.plays[2][1] == pytest.approx(GREETING_END + WAITED, abs=0.002)


async def test_speech_only_after_the_second_prompt_is_not_released() -> None:
    speech_at = GREETING_END + WAITED + 2.0 + 3.0  # 3 s into pause2
    call = FakeCall(Clock(0.0), speech_at=speech_at)
    await run(call)
    assert [p for p, _, _ in call.plays][-1] == "silent_prompt2"
    assert stages(call) == ["prompt2", "responded"]
    assert call.events[-1][1].endswith("Reason: speech,From: pause2")
    assert call.variables["IVR_RESULT"] == "agents"


async def test_speech_during_a_prompt_lets_it_finish_then_hands_on_at_once() -> None:
    call = FakeCall(Clock(0.0), speech_at=GREETING_END + WAITED + 0.5)  # during prompt2
    await run(call)
    name, _, end = call.plays[-1]
    assert name == "silent_prompt2" and end == pytest.approx(GREETING_END + WAITED + 2.0, abs=0.002)
    t, args = call.events[-1]
    assert args.endswith("Reason: speech,From: prompt2") and t == pytest.approx(end)


async def test_speech_during_the_greeting_hands_on_after_it() -> None:
    call = FakeCall(Clock(0.0), speech_at=0.5)
    await run(call)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome"]
    assert call.events[-1][1].endswith("From: greeting")


async def test_a_digit_interrupts_a_prompt_and_hands_on() -> None:
    call = FakeCall(Clock(0.0), digit_at=2.0)  # during "welcome"
    await run(call)
    assert call.plays[-1] == ("welcome", 1.0, 2.0)
    assert call.events[-1][1] == "IvrSilentCall,Stage: responded,Reason: dtmf,From: greeting"
    assert call.variables["IVR_RESULT"] == "agents"


async def test_a_digit_in_a_pause_hands_on_at_once() -> None:
    call = FakeCall(Clock(0.0), digit_at=GREETING_END + 0.05)
    await run(call)
    t, args = call.events[-1]
    assert t == pytest.approx(GREETING_END + 0.05) and "Reason: dtmf,From: pause1" in args


@pytest.mark.parametrize("hangup_at", [0.5, GREETING_END + 2.0, GREETING_END + PAUSE + 1.0, 24.9])
async def test_caller_hang_up_ends_the_flow(hangup_at: float) -> None:
    call = FakeCall(Clock(0.0), hangup_at=hangup_at)
    detector = FakeDetector()
    with pytest.raises(AgiHangup):
        await run(call, detector=detector)
    assert "IVR_RESULT" not in call.variables
    assert detector.open == 0
    assert call.clock.t == hangup_at  # nothing ran after it


async def test_without_a_speech_detector_the_caller_is_never_released() -> None:
    call = FakeCall(Clock(0.0))
    await run(call, detector=DeafDetector())
    assert [p for p, _, _ in call.plays] == ["hello", "welcome"]
    assert stages(call) == ["responded"] and "Reason: deaf" in call.events[0][1]
    assert call.variables["IVR_RESULT"] == "agents"


async def test_ami_lost_during_the_script_keeps_the_caller() -> None:
    class Dropping(FakeDetector):
        @asynccontextmanager
        async def listen(self, call: AgiChannel, since: float | None = None) -> AsyncIterator[SpeechWatch]:
            assert isinstance(call, FakeCall)
            watch = _Flaky(call.uniqueid, call.clock, drop_at=20.0)
            call.watch = watch
            yield watch

    call = FakeCall(Clock(0.0))
    await run(call, detector=Dropping())
    assert stages(call) == ["prompt2", "prompt3", "responded"]
    assert call.variables["IVR_RESULT"] == "agents"


class _Flaky(SpeechWatch):
    def __init__(self, uniqueid: str, clock: Clock, drop_at: float) -> None:
        super().__init__(uniqueid)
        self.clock, self.drop_at = clock, drop_at

    @property
    def reliable(self) -> bool:
        return self.clock.t < self.drop_at


async def test_events_on_the_bus() -> None:
    bus = EventBus()
    seen = BusLog(bus)
    call = FakeCall(Clock(0.0))
    await run(call, bus=bus)
    assert [e.kind for e in seen] == ["call.arrived", "greeting.played", "silent.stage",
                                      "silent.stage", "silent.stage", "call.released"]
    assert {e.call_id for e in seen} == {"1700000000.0"}
    assert [e.data["stage"] for e in seen if e.kind == "silent.stage"] == ["prompt2", "prompt3", "release"]
    assert seen[1].data["prompts"] == GREETING


def test_bad_pause_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="pause"):
        make_flow(Clock(0.0), pause=0)


# --- TalkDetector: the AMI side -------------------------------------------------------

async def test_talk_detector_arms_hears_the_right_channel_and_disarms() -> None:
    ami = RecordingAmi()
    detector = TalkDetector(ami, SpeechSettings(talk_threshold=600, talk_silence_ms=800))
    call = FakeCall(Clock(0.0))
    async with detector.listen(call) as watch:
        assert call.commands == ['SET VARIABLE TALK_DETECT(set) "800,600"']
        assert watch.reliable and detector.watching == 1
        ami.fire("ChannelTalkingStart", Uniqueid="someone.else", Timestamp="1.0")
        assert not watch.heard.is_set()
        ami.fire("ChannelTalkingStart", Uniqueid=call.uniqueid, Timestamp="1700000012.345")
        assert watch.heard.is_set() and watch.at == 1700000012.345
    assert call.commands[-1] == 'SET VARIABLE TALK_DETECT(remove) ""'
    assert detector.watching == 0


async def test_talk_detector_forgets_the_call_on_hang_up_without_commands() -> None:
    ami = RecordingAmi()
    detector = TalkDetector(ami)
    call = FakeCall(Clock(0.0))
    with pytest.raises(AgiHangup):  # noqa: PT012 - the hang-up is raised inside the listen block under test
        async with detector.listen(call):
            call.hung_up = True
            raise AgiHangup("HANGUP")
    assert detector.watching == 0
    assert not any("remove" in c for c in call.commands)


async def test_talk_watch_unreliable_when_ami_is_down_or_reconnected() -> None:
    ami = RecordingAmi()
    detector = TalkDetector(ami)
    async with detector.listen(FakeCall(Clock(0.0))) as watch:
        assert watch.reliable
        ami.connects += 1  # dropped and came back: events in between were lost
        assert not watch.reliable
    ami.connected = False
    async with detector.listen(FakeCall(Clock(0.0))) as watch:
        assert not watch.reliable


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"talk_threshold": 0}, "talk_threshold"),
    ({"talk_threshold": 40000}, "talk_threshold"),
    ({"talk_silence_ms": 0}, "talk_silence_ms"),
])
def test_speech_settings_refuse_bad_values(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpeechSettings(**kwargs)


def test_speech_settings_from_config() -> None:
    assert SpeechSettings.from_config(SilenceConfig(talk_threshold=700)) == SpeechSettings(700, 1000)
    assert SpeechSettings.from_config(SilenceConfig()) == SpeechSettings()


# -- issue 17: a controller dies mid-script, another resumes at the stage reached ----------
WALL0 = 1_800_000_000.0


class DyingCall(FakeCall):
    """The controller serving the call dies at ``die_at`` (its AGI session ends)."""

    die_at: float | None = None

    def _advance(self, until: float) -> None:
        if self.die_at is not None and until >= self.die_at:
            self.clock.t, self.die_at = self.die_at, None
            raise ConnectionError("the controller died")
        super()._advance(until)


class MemoryOnce(Once):
    """Once per key across both 'nodes' (what PostgreSQL gives a real pair)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    async def run(self, key: str, send: Any, *, still: Any = None, here: bool = False) -> str:
        if key in self.keys:
            return "skipped"
        self.keys.add(key)
        return await super().run(key, send)


def node(clock: Clock, once: Once) -> InboundFlow:
    flow = make_flow(clock)
    flow.once, flow.wall = once, lambda: WALL0 + clock.t
    return flow


async def die_and_resume(die_at: float, takeover: float = 1.3) -> tuple[DyingCall, float]:
    call, once = DyingCall(Clock(0.0)), MemoryOnce()
    call.die_at = die_at
    with pytest.raises(ConnectionError):
        await node(call.clock, once)(call)
    assert call.variables["IVR_STAGE"] and "IVR_RESULT" not in call.variables  # [ivr-agi] runs the route again
    resumed_at = call.clock.t = call.clock.t + takeover
    await node(call.clock, once)(call)
    return call, resumed_at


async def test_a_script_resumed_mid_pause_keeps_its_pauses_and_its_three_prompts() -> None:
    call, _ = await die_and_resume(die_at=13.0)  # in pause2 (prompt2 ended at 11)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome", "silent_prompt2", "silent_prompt3"]
    (_, _, p2_end), (_, p3_start, p3_end) = call.plays[2][:3], call.plays[3]
    assert p3_start == pytest.approx(p2_end + WAITED, abs=0.002)  # the pause ends when it would have
    release_at = next(t for t, args in call.events if "Stage: release" in args)
    assert release_at == pytest.approx(p3_end + WAITED, abs=0.002)
    assert stages(call) == ["prompt2", "prompt3", "release"]  # each once, across both nodes
    assert "ANSWER" in call.commands and call.commands.count('STREAM FILE ivr/zh-CN/hello "0123456789*#"') == 1
    assert call.variables["IVR_RESULT"] == "done" and call.variables["IVR_STAGE"] == ""


async def test_a_prompt_cut_by_the_death_is_played_again_in_full_release_never_sooner() -> None:
    call, resumed_at = await die_and_resume(die_at=10.0)  # prompt2 plays 9..11
    played = [(p, round(s, 3), round(e, 3)) for p, s, e in call.plays]
    assert [p for p, _, _ in played] == ["hello", "welcome", "silent_prompt2", "silent_prompt3"]
    # the cut prompt2 is not in plays (it never ended); the new node plays it in full at once
    assert call.commands.count('STREAM FILE ivr/zh-CN/silent_prompt2 "0123456789*#"') == 2
    _, p2_start, p2_end = call.plays[2]
    assert p2_start == pytest.approx(resumed_at, abs=0.002) and p2_end - p2_start == 2.0
    _, p3_start, p3_end = call.plays[3]
    assert p3_start == pytest.approx(p2_end + WAITED, abs=0.002)
    release_at = next(t for t, args in call.events if "Stage: release" in args)
    assert release_at == pytest.approx(p3_end + WAITED, abs=0.002)
    assert stages(call) == ["prompt2", "prompt3", "release"]


async def test_a_death_during_the_greeting_starts_the_script_again() -> None:
    call, resumed_at = await die_and_resume(die_at=2.0)
    # "welcome" was cut; the greeting plays again in full from the new node
    assert [p for p, _, _ in call.plays] == ["hello", "hello", "welcome", "silent_prompt2", "silent_prompt3"]
    assert call.plays[1][1] == pytest.approx(resumed_at, abs=0.002)
    assert stages(call) == ["prompt2", "prompt3", "release"]
    assert call.variables["IVR_RESULT"] == "done"


@pytest.mark.parametrize("value", [
    "prompt9@1800000000.000", "prompt2", "prompt2@", "prompt2@abc", "prompt2@1e9", "prompt2@1.2.3",
    "prompt2@1700000000.0",  # far in the past: not this call's
    "prompt2@1900000000.0",  # in the future
    "prompt2@" + "9" * 30, "start@1800000000\nx",
])
async def test_a_hostile_stage_is_refused_and_the_script_starts_afresh(value: str) -> None:
    from structlog.testing import capture_logs

    call = FakeCall(Clock(100.0))
    call.variables["IVR_STAGE"] = value
    flow = make_flow(call.clock)
    flow.wall = lambda: WALL0 + call.clock.t
    with capture_logs() as logs:
        await flow(call)
    assert [p for p, _, _ in call.plays] == ["hello", "welcome", "silent_prompt2", "silent_prompt3"]
    assert any(e["event"] == "inbound.stage_refused" and "IVR_STAGE" in e["error"] for e in logs)
