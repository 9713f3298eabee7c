"""The inbound flow on the real switch (R2 greeting, R3 silent call), asserted from
Asterisk's own AMI events and timestamps.

Callers are Local channels: the ;2 half runs the caller's behaviour from a test-caller
extension (stay silent, play speech or line noise, press a key), the ;1 half is the
inbound call in ivr-inbound, handed to the controller by FastAGI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from ivr.prompts import prompt_duration
from tests import REPO
from tests.integration.amitools import ts

SHANGHAI = ZoneInfo("Asia/Shanghai")
AFTERNOON = datetime(2027, 3, 10, 15, 0, tzinfo=SHANGHAI)  # an ordinary Wednesday
MID_AUTUMN_MORNING = datetime(2027, 9, 15, 9, 0, tzinfo=SHANGHAI)
BUILD = REPO / "prompts" / "build"
LANG = "zh-CN"
PAUSE = 5.0
SPEECH_ONSET = 1.0  # ivr-test/caller_speech starts with 1 s of digital silence
STAMP = 0.002  # AMI timestamps have microseconds; events of one instant may differ by this


def dur(prompt: str) -> float:
    return prompt_duration(BUILD, LANG, prompt)


def on(exten: str, leg: str = ";1"):
    """Events of the Local channel of caller extension ``exten`` (leg ;1 is the inbound)."""
    prefix = f"Local/{exten}@test-caller-"
    return lambda e: e.get("Channel", "").startswith(prefix) and e.get("Channel", "").endswith(leg)


def streams(ami, exten: str, since: int, event: str = "AGIExecEnd") -> list:
    mine = on(exten)
    return ami.find(lambda e: e.event == event and mine(e)
                    and e.get("Command", "").startswith("STREAM FILE"), since)


def commands(ami, exten: str, since: int, prefix: str, event: str = "AGIExecStart") -> list:
    mine = on(exten)
    return ami.find(lambda e: e.event == event and mine(e) and e.get("Command", "").startswith(prefix), since)


def played(events: list) -> list[str]:
    return [e["Command"].split()[2].rsplit("/", 1)[1] for e in events]


def stage_events(ami, exten: str, since: int) -> list:
    mine = on(exten)
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrSilentCall"
                    and mine(e), since)


def hangup_of(exten: str):
    mine = on(exten)
    return lambda e: e.event == "Hangup" and mine(e)


async def no_call_left(ctl) -> None:
    assert await ctl.agi.wait_idle(5), f"call tasks left running: {ctl.agi.calls}"
    assert ctl.inbound.speech.watching == 0, "a speech watch outlived its call"


def no_agi_errors(logs: Sequence[Mapping[str, Any]]) -> None:
    bad = [e for e in logs if e.get("log_level") in ("error", "critical", "exception")
           or e["event"] in ("fastagi.agi_error", "fastagi.handler_failed")]
    assert not bad, f"errors logged: {bad}"


async def start_controller(make_controller, ami, at: datetime = AFTERNOON):
    ctl = await make_controller(now=lambda: at)
    await ctl.ami.wait_connected(10)  # the flow hears callers through AMI
    return ctl


def check_silent_script(ami, exten: str, since: int, greeting: list[str]) -> float:
    """Three prompts in full, each pause >= 5 s from the prompt's end, release after the
    last pause, cause 16. Returns the release time after the first prompt ended."""
    ends = streams(ami, exten, since)
    starts = streams(ami, exten, since, "AGIExecStart")
    assert played(ends) == [*greeting, "silent_prompt2", "silent_prompt3"]
    assert all(e["Result"] == "Success" for e in ends)
    greeting_end, p2_end, p3_end = ts(ends[len(greeting) - 1]), ts(ends[-2]), ts(ends[-1])
    p2_start, p3_start = ts(starts[-2]), ts(starts[-1])
    stages = stage_events(ami, exten, since)
    assert [e["Stage"] for e in stages] == ["prompt2", "prompt3", "release"]
    release = ts(stages[-1])
    hangup = ami.find(hangup_of(exten), since)[0]
    # Each pause is one long WAIT FOR DIGIT (plus, at most, a last millisecond or two when
    # the controller's clock is behind Asterisk's), never a poll in short slices. The long
    # one is what is left of the pause when it is sent (5.05 s less the controller's time
    # since the prompt ended: a few ms idle, more when its loop is busy): at least 4 s.
    waits = commands(ami, exten, since, "WAIT FOR DIGIT")
    assert 3 <= len(waits) <= 6, [e["Command"] for e in waits]
    assert sum(int(e["Command"].split()[-1]) >= 4000 for e in waits) == 3, [e["Command"] for e in waits]
    # Pauses: never shorter than 5 s, and not dragging either.
    for label, pause in (("pause1", p2_start - greeting_end), ("pause2", p3_start - p2_end),
                         ("pause3", release - p3_end)):
        assert PAUSE - STAMP <= pause <= PAUSE + 0.6, f"{label} lasted {pause:.3f} s"
    # Each prompt played in full (its AGI command lasted the file's length).
    assert p2_end - p2_start >= dur("silent_prompt2") - 0.1
    assert p3_end - p3_start >= dur("silent_prompt3") - 0.1
    assert hangup["Cause"] == "16", hangup
    total = ts(hangup) - greeting_end
    assert total >= 3 * PAUSE + dur("silent_prompt2") + dur("silent_prompt3") - 0.1
    return total


async def test_silent_and_noisy_callers_get_three_prompts_then_release(ami, make_controller):
    """A silent caller and one with line noise below the threshold (-45 dBFS pink noise),
    at the same time: both hear three prompts and are released no sooner than 15 s after
    the first prompt ends (plus the two prompts' lengths), cause 16."""
    ctl = await start_controller(make_controller, ami)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    await ami.add_dialplan("test-caller", "silent", ["Answer()", "Wait(60)", "Hangup()"])
    noise = "&".join(["ivr-test/line_noise"] * 5)  # 50 s of noise: longer than the script
    await ami.add_dialplan("test-caller", "noisy", ["Answer()", f"Playback({noise})", "Hangup()"])
    since = len(ami.events)
    with capture_logs() as logs:
        await ami.originate("Local/silent@test-caller", "ivr-inbound", "s")
        await ami.originate("Local/noisy@test-caller", "ivr-inbound", "s")
        for exten in ("silent", "noisy"):
            await ami.wait_for(hangup_of(exten), timeout=60, since=since)
        await no_call_left(ctl)
    for exten in ("silent", "noisy"):
        total = check_silent_script(ami, exten, since, greeting)
        print(f"{exten}: released {total:.3f} s after the first prompt ended")
    assert not ami.find(lambda e: e.event == "ChannelTalkingStart" and on("noisy")(e), since), \
        "line noise counted as speech"
    released = [e for e in logs if e["event"] == "inbound.silent_stage" and e["stage"] == "release"]
    assert len(released) == 2
    no_agi_errors(logs)


def to_agents(exten: str):
    """The dialplan carries the call on to ivr-agents, or (none installed) the fallback."""
    mine = on(exten)
    return lambda e: mine(e) and (
        (e.event == "Newexten" and e.get("Context") == "ivr-agents")
        or (e.event == "UserEvent" and e.get("UserEvent") == "IvrFallback"
            and e.get("Reason") == "no-agents"))


async def speaking_caller(ami, ctl, exten: str, speak_after: float) -> tuple[int, float, float]:
    """Originate a caller who starts ``caller_speech`` ``speak_after`` s after answering and
    wait until the controller hands it on. Returns (since, detection latency, hand-on latency)."""
    await ami.add_dialplan("test-caller", exten, [
        "Answer()", f"Wait({speak_after:.3f})", "Playback(ivr-test/caller_speech)", "Wait(30)", "Hangup()"])
    since = len(ami.events)
    await ami.originate(f"Local/{exten}@test-caller", "ivr-inbound", "s")
    responded = (await ami.wait_for(
        lambda e: e.event == "UserEvent" and e.get("Stage") == "responded" and on(exten)(e),
        timeout=40, since=since))[0]
    assert responded["Reason"] == "speech"
    playback = ami.find(lambda e: e.event == "Newexten" and e.get("Application") == "Playback"
                        and on(exten, ";2")(e), since)[0]
    onset = ts(playback) + SPEECH_ONSET
    talking = ami.find(lambda e: e.event == "ChannelTalkingStart" and on(exten)(e), since)[0]
    await ami.wait_for(lambda e: e.event == "AGIExecEnd" and on(exten)(e)
                       and e.get("Command", "").startswith("SET VARIABLE IVR_RESULT"), timeout=5, since=since)
    if responded["From"].startswith("pause"):
        # Heard mid-pause: the controller woke the one long wait (AMI PlayDTMF of D), which
        # ended after ChannelTalkingStart (43 ms here idle), not at its 5 s timeout (the
        # speech starts 1.5 s into the pause: more than 3 s before it). Bounded by the
        # issue's one second, not by the idle figure: a busy loop delays the wake, not the rule.
        woken = [e for e in commands(ami, exten, since, "WAIT FOR DIGIT", "AGIExecEnd")
                 if ts(e) <= ts(responded)][-1]
        assert 0 <= ts(woken) - ts(talking) < 1.0, ts(woken) - ts(talking)
    return since, ts(talking) - onset, ts(responded) - onset


async def hang_up(ami, exten: str, since: int) -> None:
    for ch in await ami.channels():
        if ch["Channel"].startswith(f"Local/{exten}@"):
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})
    await ami.wait_for(hangup_of(exten), timeout=10, since=since)


@pytest.mark.parametrize(("exten", "prompts_before"), [
    ("speaks1", []),  # speaks after the greeting, 1.5 s into pause1
    ("speaks2", ["silent_prompt2"]),  # speaks only after the second prompt, 1.5 s into pause2
])
async def test_a_caller_who_speaks_goes_to_the_agents_and_is_not_released(
        ami, make_controller, exten, prompts_before):
    ctl = await start_controller(make_controller, ami)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    heard = [*greeting, *prompts_before]
    # Local channel set-up adds a few ms; the speech itself starts SPEECH_ONSET later.
    speak_after = sum(dur(p) for p in heard) + PAUSE * len(prompts_before) + 0.5
    with capture_logs() as logs:
        since, detect, hand_on = await speaking_caller(ami, ctl, exten, speak_after)
        assert played(streams(ami, exten, since)) == heard
        stages = stage_events(ami, exten, since)
        assert [e["Stage"] for e in stages] == [*(p.removeprefix("silent_") for p in prompts_before),
                                                "responded"]
        assert stages[-1]["From"] == f"pause{len(prompts_before) + 1}"
        await ami.wait_for(to_agents(exten), timeout=10, since=since)
        assert not ami.find(lambda e: e.event == "UserEvent" and e.get("Stage") == "release", since)
        print(f"{exten}: ChannelTalkingStart {detect * 1000:.0f} ms, "
              f"handed on {hand_on * 1000:.0f} ms after the speech began")
        # the bound: detected, and handed on, within one second of the speech's onset
        assert 0 <= detect <= hand_on < 1.0
        await hang_up(ami, exten, since)
        await no_call_left(ctl)
    no_agi_errors(logs)


async def test_speech_during_a_prompt_does_not_cut_it(ami, make_controller):
    """Documented choice: the caller hears the prompt in full and is handed on the moment
    it ends."""
    ctl = await start_controller(make_controller, ami)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    # Speech starts about 1 s into silent_prompt2.
    speak_after = sum(dur(p) for p in greeting) + PAUSE
    since, _detect, _ = await speaking_caller(ami, ctl, "overlaps", speak_after)
    p2_start, = [e for e in streams(ami, "overlaps", since, "AGIExecStart") if "silent_prompt2" in e["Command"]]
    p2_end = streams(ami, "overlaps", since)[-1]
    talking = ami.find(lambda e: e.event == "ChannelTalkingStart" and on("overlaps")(e), since)[0]
    responded = stage_events(ami, "overlaps", since)[-1]
    assert ts(p2_start) < ts(talking) < ts(p2_end), "the speech did not overlap the prompt"
    assert played([p2_end]) == ["silent_prompt2"] and p2_end["Result"] == "Success"
    assert ts(p2_end) - ts(p2_start) >= dur("silent_prompt2") - 0.1  # played in full
    assert responded["From"] == "prompt2" and 0 <= ts(responded) - ts(p2_end) < 0.5  # CI load: 0.5 s
    await ami.wait_for(to_agents("overlaps"), timeout=10, since=since)
    await hang_up(ami, "overlaps", since)
    await no_call_left(ctl)


async def test_a_key_press_hands_the_caller_on(ami, make_controller):
    ctl = await start_controller(make_controller, ami)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    press_after = sum(dur(p) for p in greeting) + 2.0
    await ami.add_dialplan("test-caller", "presses", [
        "Answer()", f"Wait({press_after:.3f})", "SendDTMF(5)", "Wait(30)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/presses@test-caller", "ivr-inbound", "s")
    responded = (await ami.wait_for(
        lambda e: e.event == "UserEvent" and e.get("Stage") == "responded" and on("presses")(e),
        timeout=30, since=since))[0]
    assert responded["Reason"] == "dtmf" and responded["From"] == "pause1"
    await ami.wait_for(to_agents("presses"), timeout=10, since=since)
    await hang_up(ami, "presses", since)
    await no_call_left(ctl)


@pytest.mark.parametrize(("at", "holiday_prompt"), [
    (MID_AUTUMN_MORNING, "holiday_mid_autumn"),
    (AFTERNOON, None),
])
async def test_greeting_chosen_by_the_controllers_clock(ami, make_controller, at, holiday_prompt):
    """The caller hangs up after the greeting: the flow ends quietly, nothing leaks."""
    ctl = await start_controller(make_controller, ami, at)
    expected = list(ctl.inbound.choose_greeting(at, ctl.config).prompts)
    if holiday_prompt:
        assert holiday_prompt in expected and "good_morning" in expected
    else:
        assert expected == ["hello", "welcome"]
    hang_after = sum(dur(p) for p in expected) + 1.0
    await ami.add_dialplan("test-caller", "greeted", ["Answer()", f"Wait({hang_after:.3f})", "Hangup()"])
    since = len(ami.events)
    with capture_logs() as logs:
        await ami.originate("Local/greeted@test-caller", "ivr-inbound", "s")
        await ami.wait_for(hangup_of("greeted"), timeout=30, since=since)
        await no_call_left(ctl)
    assert played(streams(ami, "greeted", since, "AGIExecStart")) == expected
    assert [f"ivr/{LANG}/{p}" for p in expected] == [
        e["Command"].split()[2] for e in streams(ami, "greeted", since, "AGIExecStart")]
    assert any(e["event"] == "fastagi.caller_hung_up" for e in logs)
    no_agi_errors(logs)


async def test_caller_hanging_up_during_a_prompt_leaves_nothing_behind(ami, make_controller):
    ctl = await start_controller(make_controller, ami)
    await ami.add_dialplan("test-caller", "leaves", ["Answer()", "Wait(1.5)", "Hangup()"])
    since = len(ami.events)
    with capture_logs() as logs:
        await ami.originate("Local/leaves@test-caller", "ivr-inbound", "s")
        await ami.wait_for(hangup_of("leaves"), timeout=15, since=since)
        await no_call_left(ctl)
    assert any(e["event"] == "fastagi.caller_hung_up" for e in logs)
    assert not ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrFallback"
                        and on("leaves")(e), since)
    no_agi_errors(logs)
