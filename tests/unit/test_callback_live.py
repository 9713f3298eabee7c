"""A called-back customer's live answer by speech (issue 18): the pure rule
(ivr/rules/callback.py LiveRule, LiveAnswer) over tables of TALK_DETECT bursts with the
time passed in, the listener (ivr/callbacks/live.py) fed AMI events, and the settings'
validation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ivr.callbacks.live import LiveListener
from ivr.config import load_config
from ivr.errors import ConfigError
from ivr.rules.callback import HUMAN, MACHINE, LiveAnswer, LiveRule
from ivr.sections import CallbacksConfig
from tests.fakes import Clock, FakeAgi, RecordingAmi

_CB = CallbacksConfig()
RULE = LiveRule(_CB.live_word_gap_ms, _CB.live_pause_ms, _CB.live_greeting_max_ms, _CB.live_min_word_ms)

# (what, bursts as (start s, stop event s, Duration ms), now s, verdict). A stop event comes
# word_gap (0.3 s) after the speech ended; Duration is the speech alone, as Asterisk reports.
TABLE: list[tuple[str, list[tuple[float, float | None, int]], float, str | None]] = [
    ("nothing heard", [], 30.0, None),
    ("'hello?' (0.5 s), quiet not yet long enough", [(1.0, 1.8, 500)], 2.29, None),
    ("'hello?' (0.5 s) then 0.8 s of quiet: a person", [(1.0, 1.8, 500)], 2.31, HUMAN),
    ("'hello, who is it?' (2.0 s) then quiet: a person", [(0.5, 2.8, 2000)], 3.4, HUMAN),
    ("'hello? ... hello?' with a short pause between: a person once quiet",
     [(1.0, 1.7, 400), (2.0, 2.7, 400)], 3.3, HUMAN),
    ("the same before the second pause is long enough", [(1.0, 1.7, 400), (2.0, 2.7, 400)], 3.1, None),
    ("a click (0 ms) and a breath (60 ms) are not speech", [(1.0, 1.3, 0), (2.0, 2.36, 60)], 9.0, None),
    ("a long greeting still running at 2.5 s: a machine", [(0.5, None, 0)], 3.01, MACHINE),
    ("a long greeting still running at 2.4 s: not yet", [(0.5, None, 0)], 2.9, None),
    ("phrases with short pauses, 2.8 s of speech in all: a machine",
     [(0.5, 2.0, 1200), (2.1, 3.4, 1000), (3.5, 4.4, 600)], 4.41, MACHINE),
    ("one long burst that ended (3 s): a machine", [(0.5, 3.8, 3000)], 3.8, MACHINE),
]


def play(bursts: list[tuple[float, float | None, int]]) -> LiveAnswer:
    answer = LiveAnswer(RULE)
    for start, stop, ms in bursts:
        answer.talk_start(start)
        if stop is not None:
            answer.talk_stop(stop, ms)
    return answer


@pytest.mark.parametrize(("what", "bursts", "now", "verdict"), TABLE, ids=[row[0] for row in TABLE])
def test_the_verdict_from_the_bursts(what: str, bursts: list[tuple[float, float | None, int]], now: float,
                                     verdict: str | None) -> None:
    assert play(bursts).decide(now) == verdict, what


def test_deadlines_say_when_the_verdict_can_come_without_a_burst() -> None:
    answer = LiveAnswer(RULE)
    assert answer.deadline() is None, "nothing heard: only speech can decide"
    answer.talk_start(1.0)
    assert answer.deadline() == pytest.approx(3.5), "running speech: a machine at 2.5 s of it"
    answer.talk_stop(1.8, 500)
    assert answer.deadline() == pytest.approx(2.3), "quiet since 1.5 s: a person at 2.3 s"
    assert answer.decide(2.3) == HUMAN
    assert answer.deadline() is None


def test_the_verdict_is_final() -> None:
    """A person who talks on after being heard as a person stays one; a machine's beep and
    quiet after its long greeting do not turn it into a person."""
    person = play([(1.0, 1.8, 500)])
    assert person.decide(2.4) == HUMAN
    person.talk_start(3.0)
    person.talk_stop(7.0, 3700)
    assert person.decide(8.0) == HUMAN
    machine = play([(0.5, None, 0)])
    assert machine.decide(3.1) == MACHINE
    machine.talk_stop(6.3, 5500)
    assert machine.decide(20.0) == MACHINE


@pytest.mark.parametrize(("args", "field"), [((900, 800, 2500, 100), "live_word_gap_ms"),
                                             ((10, 800, 2500, 100), "live_word_gap_ms"),
                                             ((300, 800, 2500, 2500), "live_min_word_ms")])
def test_a_rule_that_cannot_work_is_refused(args: tuple[int, int, int, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LiveRule(*args)


def test_the_settings_are_validated_at_load(tmp_path: Path) -> None:
    path = tmp_path / "ivr.toml"
    path.write_text("[callbacks]\nlive_threshold = 0\nlive_word_gap_ms = 900\nlive_pause_ms = 800\n"
                    "live_min_word_ms = -1\n", encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    text = str(caught.value)
    for key in ("callbacks.live_threshold", "callbacks.live_min_word_ms", "callbacks.live"):
        assert key in text, text
    good = tmp_path / "good.toml"
    good.write_text("[callbacks]\nlive_pause_ms = 1000\nlive_greeting_max_ms = 3000\n", encoding="utf-8")
    good.chmod(0o600)
    cb = load_config(good, env={}).callbacks
    assert (cb.live_pause_ms, cb.live_greeting_max_ms, cb.live_word_gap_ms) == (1000, 3000, 300)


async def test_the_listener_arms_talk_detect_and_hears_only_its_channel() -> None:
    ami, clock = RecordingAmi(), Clock(100.0)
    listener = LiveListener(RULE, 512, clock)
    listener.attach(ami)
    call = FakeAgi("9.9")
    async with listener.listen(call) as watch:
        assert call.variables["TALK_DETECT(set)"] == "300,512"
        ami.fire("ChannelTalkingStart", Uniqueid="8.8")  # another channel
        assert watch.answer.talking_since is None
        ami.fire("ChannelTalkingStart", Uniqueid="9.9")
        clock.t = 100.8
        ami.fire("ChannelTalkingStop", Uniqueid="9.9", Duration="500")
        ami.fire("ChannelTalkingStop", Uniqueid="9.9", Duration="junk")  # ignored
        assert watch.verdict() is None
        clock.t = 101.31
        assert watch.verdict() == HUMAN
    assert call.sent("SET VARIABLE TALK_DETECT(remove)"), "removed before the bridge"
    assert listener.watches == {}


async def test_a_waiter_wakes_at_the_deadline_and_on_bursts() -> None:
    """Real time, scaled small: a person's 'hello' then quiet is decided when the pause has
    passed (the waiter sleeps until the rule's deadline, not in slices)."""
    loop = asyncio.get_running_loop()
    fast = LiveRule(word_gap_ms=20, pause_ms=60, greeting_max_ms=200, min_word_ms=10)
    listener = LiveListener(fast, 512, loop.time)
    ami = RecordingAmi()
    listener.attach(ami)
    async with listener.listen(FakeAgi("9.9")) as watch:
        assert await watch.wait(0.05) is None, "nothing heard: no verdict within the limit"
        waiting = asyncio.ensure_future(watch.wait(5.0))
        ami.fire("ChannelTalkingStart", Uniqueid="9.9")
        await asyncio.sleep(0.05)  # pacing: the customer talks for 50 ms (then 20 ms of quiet)
        ami.fire("ChannelTalkingStop", Uniqueid="9.9", Duration="30")
        started = loop.time()
        assert await asyncio.wait_for(waiting, 2.0) == HUMAN
        assert loop.time() - started < 1.0
    async with listener.listen(FakeAgi("9.10")) as watch:
        ami.fire("ChannelTalkingStart", Uniqueid="9.10")
        assert await asyncio.wait_for(watch.wait(), 2.0) == MACHINE, "talks on past 200 ms"
