"""The rules with SIP on both sides: callers through the inbound trunk (pjsip.conf
``[anonymous]``) and agents as registered SIP phones, with real RTP audio.

SIPp does the signalling (tests/integration/sipp/: ``trunk_caller.xml``,
``agent_register.xml``, ``agent_phone.xml``, ``agent_hold_button.xml``); the media is
a ``tests.rtp.RtpPeer`` per phone, named in the SDP: it sends the caller's audio (line
noise, nothing at all, comfort noise, speech; u-law or A-law) and RFC 4733 digits, and
records what the phone hears. What the caller heard is checked on that recording
(``tests.rtp.Heard``: voice vs. silence in time windows, where each prompt was heard by
cross-correlation with the prompt file), and the timings on Asterisk's AMI timestamps
(the same wall clock on this machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from structlog.testing import capture_logs

from ivr.prompts import prompt_duration
from tests import REPO
from tests.integration.amitools import AmiRecorder, ts
from tests.rtp import (
    PCMA,
    PCMU,
    Audio,
    ComfortNoise,
    Digit,
    Heard,
    Quiet,
    RtpPeer,
    Step,
    linear,
    silence,
    tone,
    ulaw_file,
)

pytestmark = pytest.mark.integration

AFTERNOON = datetime(2027, 3, 10, 15, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
BUILD = REPO / "prompts" / "build"
LANG = "zh-CN"
SIPP = Path(__file__).parent / "sipp"
PAUSE = 5.0
STAMP = 0.002  # AMI timestamps of one instant may differ by this
JITTER = 0.06  # packet arrival vs. the switch's own timestamps, on a loaded 2-core machine
# An order between a switch event (its AMI timestamp: the bridge, the resume) and what the
# caller hears (packet arrival): the last frames of a prompt are still on the wire when
# Asterisk logs the next step. Measured misses of JITTER here: 0.07, 0.14, 0.17 s in four
# runs; a prompt cut short or a bridge made before the number would still miss this by
# the prompt's length (agent_service: 0.9 s).
ORDER = 0.25
HEARD = 0.9  # correlation above which a prompt counts as heard


def dur(prompt: str) -> float:
    return prompt_duration(BUILD, LANG, prompt)


def prompt(name: str) -> np.ndarray:
    return linear(BUILD / LANG / f"{name}.ulaw")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_sipp(switch: Any, scenario: str, *args: str, cwd: Path, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPP / scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
        "-m", "1", "-nostdin", "-timeout", "300s", "-timeout_error", *args, f"127.0.0.1:{switch.sip_port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd)


async def finished(proc: asyncio.subprocess.Process, timeout: float) -> str:
    """Wait for a SIPp run to end; its output if it failed."""
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return "" if proc.returncode == 0 else (out + err).decode(errors="replace")[-1500:]


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


# ---------------------------------------------------------------------------- phones
@dataclass
class SipCaller:
    """A caller through the trunk: SIPp for SIP, an RtpPeer for the audio."""

    number: str
    peer: RtpPeer
    sipp: asyncio.subprocess.Process
    uid: str = ""
    channel: str = ""

    async def answered(self, ami: AmiRecorder, since: int, timeout: float = 15) -> SipCaller:
        [ev] = await ami.wait_for(lambda e: e.event == "Newexten" and e.get("Application") == "AGI"
                                  and e.get("Channel", "").startswith("PJSIP/anonymous-")
                                  and e.get("CallerIDNum") == self.number, timeout=timeout, since=since)
        self.uid, self.channel = ev["Uniqueid"], ev["Channel"]
        return self

    def heard(self) -> Heard:
        return self.peer.heard()


@contextlib.asynccontextmanager
async def sip_caller(switch: Any, tmp_path: Path, number: str, pt: int = PCMU) -> AsyncIterator[SipCaller]:
    peer = await RtpPeer.open(pt)
    codec = "PCMU" if pt == PCMU else "PCMA"
    proc = await run_sipp(switch, "trunk_caller.xml", "-set", "rtp_port", str(peer.port), "-set", "pt", str(pt),
                          "-set", "codec", codec, "-set", "number", number, cwd=tmp_path, port=free_udp_port())
    try:
        yield SipCaller(number, peer, proc)
    finally:
        await stop(proc)
        peer.close()


@contextlib.asynccontextmanager
async def agent_phone(switch: Any, ami: AmiRecorder, tmp_path: Path, number: str, ring: float,
                      scenario: str = "agent_phone.xml", *extra: str) -> AsyncIterator[RtpPeer]:
    """Agent ``number`` registers (digest auth) and waits for a call, which it lets ring
    ``ring`` s before answering; yields the phone's RtpPeer."""
    port = free_udp_port()
    since = len(ami.events)
    secret = switch.embedded.secrets().agents[number]
    reg = await run_sipp(switch, "agent_register.xml", "-au", number, "-ap", secret, "-s", number,
                         cwd=tmp_path, port=port)
    failed = await finished(reg, 20)
    assert not failed, failed
    await ami.wait_for(lambda e: e.event == "ContactStatus" and e.get("AOR") == number
                       and e.get("ContactStatus") in ("Created", "Reachable", "NonQualified", "Updated"),
                       timeout=10, since=since)
    peer = await RtpPeer.open(PCMU)
    proc = await run_sipp(switch, scenario, "-set", "ring_ms", str(int(ring * 1000)), "-set", "rtp_port",
                          str(peer.port), "-s", number, *extra, cwd=tmp_path, port=port)
    try:
        yield peer
    finally:
        await stop(proc)
        peer.close()


async def hang_up_sip(ami: AmiRecorder) -> None:
    """Hang up every PJSIP channel left (a failed test; the controller stops after)."""
    for ch in await ami.channels():
        if ch["Channel"].startswith("PJSIP/"):
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})


def released(uid: str) -> Any:
    return lambda e: e.event == "Hangup" and e.get("Uniqueid") == uid


# ---------------------------------------------------------------------------- R3 silent callers
def check_silent_script(ami: AmiRecorder, caller: SipCaller, since: int, greeting: list[str]) -> dict[str, float]:
    """From AMI: three prompts in full, three pauses of 5 s (never shorter), release by
    the controller (cause 16). From the caller's audio: the greeting, prompt 2 and
    prompt 3 heard in that order with silence between, nothing after prompt 3 until the
    BYE came no sooner than 5 s later. Returns the pauses as heard."""
    uid = caller.uid

    def stream(event: str) -> list[Any]:
        return ami.find(lambda e: e.event == event and e.get("Uniqueid") == uid
                        and e.get("Command", "").startswith("STREAM FILE"), since)

    ends, starts = stream("AGIExecEnd"), stream("AGIExecStart")
    assert [e["Command"].split()[2].rsplit("/", 1)[1] for e in ends] == [*greeting, "silent_prompt2",
                                                                            "silent_prompt3"]
    greeting_end, p2_start, p2_end, p3_start, p3_end = (ts(ends[len(greeting) - 1]), ts(starts[-2]),
                                                        ts(ends[-2]), ts(starts[-1]), ts(ends[-1]))
    stages = ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrSilentCall"
                      and e.get("Uniqueid") == uid, since)
    assert [e["Stage"] for e in stages] == ["prompt2", "prompt3", "release"]
    release = ts(stages[-1])
    [hangup] = ami.find(released(uid), since)
    assert hangup["Cause"] == "16", hangup  # released by the controller, not by RTP timeout
    for label, pause in (("pause1", p2_start - greeting_end), ("pause2", p3_start - p2_end),
                         ("pause3", release - p3_end)):
        assert PAUSE - STAMP <= pause <= PAUSE + 0.6, f"{caller.number} {label} lasted {pause:.3f} s (AMI)"

    heard = caller.heard()
    at_greeting, score_g = heard.find(prompt(greeting[-1]))
    at_p2, score_2 = heard.find(prompt("silent_prompt2"), after=at_greeting)
    at_p3, score_3 = heard.find(prompt("silent_prompt3"), after=at_p2)
    assert min(score_g, score_2, score_3) >= HEARD, (caller.number, score_g, score_2, score_3)
    g_end, p2_end_heard, p3_end_heard = (at_greeting + dur(greeting[-1]), at_p2 + dur("silent_prompt2"),
                                         at_p3 + dur("silent_prompt3"))
    heard_pauses = {"pause1": at_p2 - g_end, "pause2": at_p3 - p2_end_heard, "pause3": ts(hangup) - p3_end_heard}
    for label, pause in heard_pauses.items():
        assert pause >= PAUSE - JITTER, f"{caller.number} heard {label} of {pause:.3f} s"
    # Silence in the pauses (the prompts' own trailing quiet aside): no sound reached the caller.
    for t0, t1 in ((g_end + 0.3, at_p2 - 0.1), (p2_end_heard + 0.3, at_p3 - 0.1), (p3_end_heard + 0.3, ts(hangup))):
        assert heard.sound(t0, t1) == 0.0, (caller.number, t0, t1)
    return heard_pauses


def noise(switch: Any, seconds: float, pt: int) -> bytes:
    """The switch's ivr-test line noise (pink, -45 dBFS RMS), looped to ``seconds``."""
    one = ulaw_file(switch.embedded.rootfs / "usr/share/asterisk/sounds/ivr-test/line_noise.ulaw", pt)
    return (one * (int(seconds * 8000) // len(one) + 1))[: int(seconds * 8000)]


async def test_silent_sip_callers_get_three_prompts_then_release(switch, ami: AmiRecorder, make_controller,
                                                                 tmp_path: Path) -> None:
    """Four silent SIP callers at once, each hears three prompts with 5 s pauses and is
    released no sooner: line noise at -45 dBFS (u-law), a phone that sends no RTP at all
    (silence suppression), one that sends only comfort noise (payload type 13), and line
    noise over A-law. None is cut by PJSIP's rtp_timeout (the trunk has it off)."""
    ctl = await make_controller(now=lambda: AFTERNOON)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    script = 60.0
    callers: dict[str, tuple[int, list[Step]]] = {
        "13800000001": (PCMU, [Audio(noise(switch, script, PCMU))]),
        "13800000002": (PCMU, [Quiet(script)]),
        "13800000003": (PCMU, [ComfortNoise(script)]),
        "13800000004": (PCMA, [Audio(noise(switch, script, PCMA))]),
    }
    since = len(ami.events)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(hang_up_sip, ami)
        running = []
        for number, (pt, steps) in callers.items():
            caller = await stack.enter_async_context(sip_caller(switch, tmp_path, number, pt))
            caller.peer.play(*steps)
            running.append(caller)
        with capture_logs() as logs:
            for caller in running:
                await caller.answered(ami, since)
            for caller in running:
                await ami.wait_for(released(caller.uid), timeout=70, since=since)
            for caller in running:
                failed = await finished(caller.sipp, 10)  # the BYE reached SIPp and it answered
                assert not failed, failed
        for caller, (number, (pt, _)) in zip(running, callers.items(), strict=True):
            pauses = check_silent_script(ami, caller, since, greeting)
            kinds = caller.peer.heard().payload_types()
            assert kinds == {pt}, kinds  # the switch answered in the caller's codec
            print(f"{number} ({'A-law' if pt == PCMA else 'u-law'}, sent {caller.peer.sent} packets): "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in pauses.items()))
    assert not ami.find(lambda e: e.event == "ChannelTalkingStart"
                        and e.get("Uniqueid") in {c.uid for c in running}, since), "noise or CN counted as speech"
    assert [c.peer.sent > 0 for c in running] == [True, False, True, True]
    bad = [e for e in logs if e.get("log_level") in ("error", "critical")]
    assert not bad, bad


# ---------------------------------------------------------------------------- to an agent
AGENT_HZ = {"1001": 440.0, "1002": 1000.0}  # each agent phone "speaks" its own tone


def agents_config(*numbers: str, extra: str = "") -> str:
    return extra + "".join(f'[[agents]]\nnumber = "{n}"\nname = "Agent {n}"\ndial = "PJSIP/{n}"\n\n'
                           for n in numbers)


async def bridged_with(ami: AmiRecorder, uid: str, agent: str, since: int, timeout: float) -> tuple[Any, Any]:
    """The caller's BridgeEnter and agent ``agent``'s SIP channel's, in the same bridge."""
    [mine] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == uid,
                                timeout=timeout, since=since)
    [peer] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") != uid
                                and e.get("BridgeUniqueid") == mine["BridgeUniqueid"], timeout=10, since=since)
    assert peer["Channel"].startswith(f"PJSIP/{agent}-"), peer["Channel"]
    return mine, peer


def heard_in_order(heard: Heard, names: list[str], after: float = 0.0) -> list[float]:
    """Each prompt heard in full, one after the other; their start times."""
    starts = []
    for name in names:
        at, score = heard.first(prompt(name), after=after, heard=HEARD)
        assert score >= HEARD, (name, score)
        starts.append(at)
        after = at + dur(name) - 0.05
    return starts


def speech(switch: Any, pt: int = PCMU) -> bytes:
    return ulaw_file(switch.embedded.rootfs / "usr/share/asterisk/sounds/ivr-test/caller_speech.ulaw", pt)


@pytest.mark.parametrize("prompts_before", [[], ["silent_prompt2"]], ids=["speaks-in-pause1", "speaks-in-pause2"])
async def test_speaking_sip_caller_reaches_a_sip_agent(switch, ami: AmiRecorder, make_controller, tmp_path: Path,
                                                      prompts_before: list[str]) -> None:
    """A SIP caller silent through the greeting (and prompt 2), then speaking 1.5 s into
    the pause: the controller hears the speech on the RTP, hands the call to the agents,
    agent 1001's registered SIP phone rings and answers; the caller hears the agent's
    number, then the agent (its tone) and is never released."""
    ctl = await make_controller(agents_config("1001"), now=lambda: AFTERNOON)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    quiet_for = sum(dur(p) for p in [*greeting, *prompts_before]) + PAUSE * len(prompts_before) + 0.5
    since = len(ami.events)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(hang_up_sip, ami)
        agent = await stack.enter_async_context(agent_phone(switch, ami, tmp_path, "1001", ring=1.0))
        agent.play(Audio(tone(AGENT_HZ["1001"], 60, PCMU)), timeout=60)
        caller = await stack.enter_async_context(sip_caller(switch, tmp_path, "13800000011"))
        caller.peer.play(Audio(silence(quiet_for, PCMU)), Audio(speech(switch)), Audio(silence(40, PCMU)))
        await caller.answered(ami, since)
        [responded] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("Uniqueid") == caller.uid
                                         and e.get("Stage") == "responded", timeout=40, since=since)
        assert responded["Reason"] == "speech" and responded["From"] == f"pause{len(prompts_before) + 1}"
        _, leg = await bridged_with(ami, caller.uid, "1001", since, timeout=30)
        t_bridge = ts(leg)
        await asyncio.sleep(2.0)  # pacing: two seconds of conversation to listen to
        heard = caller.heard()
        assert not ami.find(lambda e: e.get("Uniqueid") == caller.uid and e.get("Stage") == "release", since)
    stages = [e["Stage"] for e in ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrSilentCall"
                                           and e.get("Uniqueid") == caller.uid, since)]
    assert stages == [*(p.removeprefix("silent_") for p in prompts_before), "responded"]
    heard_in_order(heard, [greeting[-1], *prompts_before])
    intro = heard_in_order(heard, ["agent_intro", "digit_1", "digit_0", "digit_0", "digit_1", "agent_service"])
    assert intro[-1] + dur("agent_service") <= t_bridge + ORDER  # the number, then the agent
    pitch = heard.pitch(t_bridge + 0.5, t_bridge + 1.8)
    assert abs(pitch - AGENT_HZ["1001"]) < 20, pitch  # the caller hears agent 1001
    print(f"speech heard, handed on; bridged with {leg['Channel']}, caller hears {pitch:.0f} Hz")


def press_after_greeting(ctl: Any, digit: str = "5") -> tuple[Audio, Digit, Audio]:
    """A caller who keys ``digit`` (RFC 4733) half a second after the greeting."""
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    return Audio(silence(sum(dur(p) for p in greeting) + 0.5, PCMU)), Digit(digit), Audio(silence(120, PCMU))


def user_events(ami: AmiRecorder, name: str, since: int, **match: str) -> list[Any]:
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == name
                    and all(e.get(k) == v for k, v in match.items()), since)


async def test_sip_agent_letting_it_ring_raises_alarms_and_the_caller_hears_the_apology(
        switch, ami: AmiRecorder, make_controller, tmp_path: Path) -> None:
    """Agent 1001's registered SIP phone rings 22 s (cn: a ring is 5 s) before answering:
    the warning alarm at 3 rings, the critical one at 4 (critical_rings = 4 here), and
    the SIP caller hears ringing, then the apology and the agent's number, then the agent."""
    ctl = await make_controller(agents_config("1001", extra="[rings]\ncritical_rings = 4\n\n"), now=lambda: AFTERNOON)
    since = len(ami.events)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(hang_up_sip, ami)
        agent = await stack.enter_async_context(agent_phone(switch, ami, tmp_path, "1001", ring=22.0))
        agent.play(Audio(tone(AGENT_HZ["1001"], 90, PCMU)), timeout=90)
        caller = await stack.enter_async_context(sip_caller(switch, tmp_path, "13800000021"))
        caller.peer.play(*press_after_greeting(ctl))
        await caller.answered(ami, since)
        [responded] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("Uniqueid") == caller.uid
                                         and e.get("Stage") == "responded", timeout=30, since=since)
        assert responded["Reason"] == "dtmf"
        [ringing] = await ami.wait_for(lambda e: e.event == "Newstate" and e.get("ChannelStateDesc") == "Ringing"
                                       and e.get("Channel", "").startswith("PJSIP/1001-"), timeout=15, since=since)
        _, leg = await bridged_with(ami, caller.uid, "1001", since, timeout=40)
        t_bridge = ts(leg)
        await asyncio.sleep(2.0)  # pacing: two seconds of conversation to listen to
        heard = caller.heard()
    alarms = user_events(ami, "IvrRingAlarm", since)
    assert [(a["Agent"], a["Level"], a["Rings"]) for a in alarms] == [
        ("1001", "warning", "3"), ("1001", "critical", "4")]
    for alarm, rings in zip(alarms, (3, 4), strict=True):
        assert rings * 5.0 - 0.6 <= ts(alarm) - ts(ringing) <= rings * 5.0 + 0.6, ts(alarm) - ts(ringing)
    # While the agent's phone rang the caller heard the cn ring cadence (1 s on, 4 s off).
    t0 = ts(ringing) + 0.3
    on = [heard.sound(t0 + 5 * k + 0.1, t0 + 5 * k + 0.6) for k in range(3)]
    off = [heard.sound(t0 + 5 * k + 1.5, t0 + 5 * k + 4.0) for k in range(3)]
    assert min(on) > 0.8 and max(off) == 0.0, (on, off)
    said = heard_in_order(heard, ["ring_apology", "agent_intro", "digit_1", "digit_0", "digit_0", "digit_1",
                                  "agent_service"], after=ts(ringing) + 15)
    assert said[-1] + dur("agent_service") <= t_bridge + ORDER
    assert abs(heard.pitch(t_bridge + 0.5, t_bridge + 1.8) - AGENT_HZ["1001"]) < 20


ANSWER_PROMPTS = ["agent_intro", "digit_1", "digit_0", "digit_0", "digit_1", "agent_service"]  # agent 1001


@pytest.mark.parametrize("hold_after", [4.5, 0.5], ids=["bridged", "before-the-caller-joins"])
async def test_hold_button_on_a_sip_phone(switch, ami: AmiRecorder, make_controller, tmp_path: Path,
                                          hold_after: float) -> None:
    """Agent 1001 presses its SIP phone's hold button (re-INVITE sendonly) ``hold_after`` s
    after answering and resumes after the second reminder: the SIP caller hears music, a
    reminder every 8 s (reminder_interval = 8 here), the thank-you on resume, then the
    agent again. At 0.5 s the caller still hears the agent's number (not yet bridged to
    the agent): the hold starts when the caller joins."""
    interval = 8.0
    joins_after = sum(dur(p) for p in ANSWER_PROMPTS)  # the caller joins the agent then
    pending = max(0.0, joins_after - hold_after)  # the hold waits that long for the caller
    unhold_ms = int((2 * interval + dur("hold_reminder") + 1.0 + pending) * 1000)  # 1.2 s before a third
    hold = f"[hold]\nreminder_interval = {interval}\nchoices_after = 100.0\n\n"
    ctl = await make_controller(agents_config("1001", extra=hold),
                                now=lambda: AFTERNOON)
    since = len(ami.events)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(hang_up_sip, ami)
        agent = await stack.enter_async_context(agent_phone(
            switch, ami, tmp_path, "1001", 1.0, "agent_hold_button.xml", "-set", "hold_ms", str(int(hold_after * 1000)),
            "-set", "unhold_ms", str(unhold_ms)))
        agent.play(Audio(tone(AGENT_HZ["1001"], 90, PCMU)), timeout=90)
        caller = await stack.enter_async_context(sip_caller(switch, tmp_path, "13800000031"))
        caller.peer.play(*press_after_greeting(ctl))
        await caller.answered(ami, since)
        await bridged_with(ami, caller.uid, "1001", since, timeout=40)
        [start] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                                     and e.get("Uniqueid") == caller.uid and e.get("State") == "start",
                                     timeout=15, since=since)
        [hold] = ami.find(lambda e: e.event == "Hold" and e.get("Channel", "").startswith("PJSIP/1001-"), since)
        [resume] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                                      and e.get("Uniqueid") == caller.uid and e.get("State") == "resume",
                                      timeout=30, since=since)
        await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == caller.uid
                           and ts(e) > ts(start), timeout=15, since=since)  # back in the agent's bridge
        await asyncio.sleep(dur("hold_thanks") + 2.0)  # pacing: the thanks, then conversation to listen to
        heard = caller.heard()
    joined = ts(ami.find(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == caller.uid, since)[0])
    reminders = user_events(ami, "IvrHold", since, Uniqueid=caller.uid, State="reminder")
    assert len(reminders) == 2, [ts(r) - ts(start) for r in reminders]
    t_start, t_resume = ts(start), ts(resume)
    # The hold starts within 1 s of the button, or of the caller joining a held agent.
    assert ts(hold) < joined if pending else ts(hold) > joined
    assert 0.0 <= t_start - max(ts(hold), joined) < 1.0, (t_start - ts(hold), t_start - joined)
    # What the caller heard, on its RTP: the two reminders about 8 and 16 s in, music
    # around them (sound all the time on hold), the thank-you after the resume.
    at = heard_in_order(heard, ["hold_reminder", "hold_reminder"], after=t_start)
    for k, t in enumerate(at, start=1):
        assert abs(t - (t_start + interval * k)) < 0.5, (k, t - t_start)
    music = [(t_start + 0.5, at[0] - 0.2), (at[0] + dur("hold_reminder") + 0.2, at[1] - 0.2)]
    for t0, t1 in music:
        assert heard.sound(t0, t1) > 0.8, (t0 - t_start, t1 - t_start, heard.sound(t0, t1))
        assert heard.find(prompt("hold_reminder"), after=t0)[0] >= t1  # music, not a prompt
    [thanks] = heard_in_order(heard, ["hold_thanks"], after=t_resume - 0.5)
    assert thanks >= t_resume - ORDER
    assert abs(heard.pitch(thanks + dur("hold_thanks") + 0.5, thanks + dur("hold_thanks") + 1.5)
               - AGENT_HZ["1001"]) < 20  # back with the agent


def keys(text: str) -> list[Any]:
    """Digits pressed one by one (RFC 4733), a little apart."""
    out: list[Any] = []
    for d in text:
        out += [Digit(d), Audio(silence(0.15, PCMU))]
    return out


@pytest.mark.parametrize("presses", [True, False], ids=["target-presses-1", "target-never-presses"])
async def test_warm_transfer_between_sip_phones(switch, ami: AmiRecorder, make_controller, tmp_path: Path,
                                               presses: bool) -> None:
    """Agent 1001's SIP phone keys *2 1002# (RFC 4733) during the call; agent 1002's SIP
    phone rings, answers and hears the announcement, then presses 1 (RFC 4733) or
    nothing. The SIP caller ends up bridged with 1002 after the thank-you, or back with
    1001 after the apology; it hears that party (its tone) on its RTP."""
    ctl = await make_controller(agents_config("1001", "1002", extra="[transfer]\nconfirm_timeout = 3.0\n\n"),
                                now=lambda: AFTERNOON)
    since = len(ami.events)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(hang_up_sip, ami)
        first = await stack.enter_async_context(agent_phone(switch, ami, tmp_path, "1001", ring=1.0))
        target = await stack.enter_async_context(agent_phone(switch, ami, tmp_path, "1002", ring=2.0))
        caller = await stack.enter_async_context(sip_caller(switch, tmp_path, "13800000041"))
        caller.peer.play(*press_after_greeting(ctl))
        await caller.answered(ami, since)
        await bridged_with(ami, caller.uid, "1001", since, timeout=40)
        first.play(Audio(tone(AGENT_HZ["1001"], 1.0, PCMU)), *keys("*2"), Audio(silence(1.0, PCMU)),
                   *keys("1002#"), Audio(tone(AGENT_HZ["1001"], 90, PCMU)))
        [request] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrTransferRequest",
                                       timeout=20, since=since)
        assert request["Target"] == "1002" and request["Channel"].startswith("PJSIP/1001-")
        [confirm] = await ami.wait_for(lambda e: e.event == "AGIExecStart" and e.get("Channel", "").startswith(
            "PJSIP/1002-") and e.get("Command", "").startswith("WAIT FOR DIGIT"), timeout=40, since=since)
        if presses:
            target.play(*keys("1"), Audio(tone(AGENT_HZ["1002"], 90, PCMU)))
        else:
            target.play(Audio(tone(AGENT_HZ["1002"], 90, PCMU)))
        final = "completed" if presses else "returned"
        await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrTransfer"
                                    and e.get("Uniqueid") == caller.uid and e.get("State") == final,
                                    timeout=30, since=since)
        party = "1002" if presses else "1001"
        [joined] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == caller.uid
                                      and ts(e) >= ts(confirm), timeout=15, since=since)
        [other] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") != caller.uid
                                     and e.get("BridgeUniqueid") == joined["BridgeUniqueid"]
                                     and e.get("Channel", "").startswith("PJSIP/"), timeout=10, since=since)
        assert other["Channel"].startswith(f"PJSIP/{party}-"), other["Channel"]
        await asyncio.sleep(2.5)  # pacing: the party's first words to listen to
        heard = caller.heard()
    states = [e["State"] for e in user_events(ami, "IvrTransfer", since, Uniqueid=caller.uid)]
    assert states[-1] == final and ("confirmed" in states) == presses, states
    heard_in_order(heard, ["transfer_thanks" if presses else "transfer_apology"], after=ts(confirm) - 1)
    t_with = max(ts(joined), ts(other))
    pitch = heard.pitch(t_with + 0.8, t_with + 2.2)
    assert abs(pitch - AGENT_HZ[party]) < 20, (party, pitch)
    print(f"transfer {final}: the caller hears agent {party} ({pitch:.0f} Hz)")
