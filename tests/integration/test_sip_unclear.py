"""R3 unclear line with SIP on both sides: a caller through the inbound trunk and agent
1001's registered SIP phone, real RTP both ways (tests/rtp.py; the phones and helpers of
test_sip_rules.py).

The caller keys 5 after the greeting and reaches agent 1001; once bridged, the caller's
line is faint (``ivr-test/caller_speech_faint``, speech at -40 dBFS RMS, looped) and the
agent keys ``*5`` over RFC 4733 (the key armed on agent legs only). Then either

* the line stays faint: the caller hears the ask, the ask again 5 s after it ended, the
  goodbye 5 s after that, and the BYE 5 s after the goodbye ended, never sooner (times
  from AMI and from the caller's own RTP, voice vs. silence in between); or
* the caller speaks normally (``caller_speech``, -20 dBFS) after the first ask: back in
  the agent's own bridge, hearing the agent again (its tone), no second ask.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.integration.amitools import AmiRecorder, ts
from tests.integration.test_sip_rules import (
    AFTERNOON,
    AGENT_HZ,
    HEARD,
    JITTER,
    LANG,
    PAUSE,
    STAMP,
    agent_phone,
    agents_config,
    bridged_with,
    dur,
    finished,
    hang_up_sip,
    heard_in_order,
    keys,
    press_after_greeting,
    prompt,
    released,
    sip_caller,
    speech,
    user_events,
)
from tests.rtp import PCMU, Audio, silence, tone, ulaw_file

pytestmark = pytest.mark.integration


def faint(switch: Any, seconds: float) -> bytes:
    """``ivr-test/caller_speech_faint`` (1 s quiet, then words at -40 dBFS), looped."""
    one = ulaw_file(switch.embedded.rootfs / "usr/share/asterisk/sounds/ivr-test/caller_speech_faint.ulaw")
    return (one * (int(seconds * 8000) // len(one) + 1))[: int(seconds * 8000)]


def streams(ami: AmiRecorder, uid: str, since: int, name: str) -> list[tuple[float, float]]:
    """(AGIExecStart, AGIExecEnd) of each STREAM FILE of prompt ``name`` on the call."""
    def matching(event: str) -> list[Any]:
        return ami.find(lambda e: e.event == event and e.get("Uniqueid") == uid
                        and e.get("Command", "").startswith(f"STREAM FILE ivr/{LANG}/{name} "), since)

    return [(ts(a), ts(b)) for a, b in zip(matching("AGIExecStart"), matching("AGIExecEnd"), strict=False)]


@contextlib.asynccontextmanager
async def call_with_agent(switch: Any, ami: AmiRecorder, make_controller: Any, tmp_path: Path, number: str,
                          stack: contextlib.AsyncExitStack) -> Any:
    """A SIP caller bridged with agent 1001's SIP phone (both sending audio); yields
    (caller, agent peer, caller's BridgeEnter, since)."""
    ctl = await make_controller(agents_config("1001"), now=lambda: AFTERNOON)
    since = len(ami.events)
    stack.push_async_callback(hang_up_sip, ami)
    agent = await stack.enter_async_context(agent_phone(switch, ami, tmp_path, "1001", ring=1.0))
    agent.play(Audio(tone(AGENT_HZ["1001"], 120, PCMU)), timeout=60)
    caller = await stack.enter_async_context(sip_caller(switch, tmp_path, number))
    caller.peer.play(*press_after_greeting(ctl)[:2], Audio(faint(switch, 120)))
    await caller.answered(ami, since)
    mine, _ = await bridged_with(ami, caller.uid, "1001", since, timeout=40)
    yield caller, agent, mine, since


async def agent_keys_faint(agent: Any) -> None:
    """The agent's phone: its voice, then *5 over RFC 4733, then its voice again."""
    await agent.replace(*keys("*5"), Audio(tone(AGENT_HZ["1001"], 120, PCMU)))


async def test_faint_sip_caller_is_asked_twice_then_released(switch, ami: AmiRecorder, make_controller,
                                                            tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        caller, agent, _, since = await stack.enter_async_context(
            call_with_agent(switch, ami, make_controller, tmp_path, "13800000051", stack))
        await asyncio.sleep(1.0)  # pacing: a second of the faint call before the agent gives up on it
        await agent_keys_faint(agent)
        [ask] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrUnclearLine"
                                   and e.get("Uniqueid") == caller.uid and e.get("Stage") == "ask",
                                   timeout=15, since=since)
        assert (ask["Reason"], ask["Via"]) == ("faint", "key")
        [hangup] = await ami.wait_for(released(caller.uid), timeout=60, since=since)
        failed = await finished(caller.sipp, 10)  # the BYE reached the SIP caller, who answered it
        assert not failed, failed
        heard = caller.heard()
    stages = user_events(ami, "IvrUnclearLine", since, Uniqueid=caller.uid)
    assert [e["Stage"] for e in stages] == ["ask", "ask-again", "goodbye", "release"]
    asks, [goodbye] = streams(ami, caller.uid, since, "unclear_ask"), streams(ami, caller.uid, since,
                                                                                  "unclear_goodbye_faint")
    assert len(asks) == 2, asks
    for (start, end), name in ((asks[0], "unclear_ask"), (asks[1], "unclear_ask"),
                               (goodbye, "unclear_goodbye_faint")):
        assert abs(end - start - dur(name)) < 0.3, f"{name} played in full ({end - start:.2f} s)"
    pauses = {"ask_to_ask_again": asks[1][0] - asks[0][1], "ask_again_to_goodbye": goodbye[0] - asks[1][1],
              "goodbye_to_release": ts(stages[-1]) - goodbye[1], "goodbye_to_hangup": ts(hangup) - goodbye[1]}
    assert all(p >= PAUSE - STAMP for p in pauses.values()), pauses  # never sooner
    assert all(p < PAUSE + 0.6 for p in pauses.values()), pauses
    # On the caller's RTP: the three prompts in full, in order, silence between, then the BYE.
    at = heard_in_order(heard, ["unclear_ask", "unclear_ask", "unclear_goodbye_faint"], after=ts(ask) - 0.5)
    ends = [t + dur(n) for t, n in zip(at, ["unclear_ask", "unclear_ask", "unclear_goodbye_faint"], strict=True)]
    heard_pauses = {"ask_to_ask_again": at[1] - ends[0], "ask_again_to_goodbye": at[2] - ends[1],
                    "goodbye_to_bye": ts(hangup) - ends[2]}
    assert all(p >= PAUSE - JITTER for p in heard_pauses.values()), heard_pauses
    for t0, t1 in ((ends[0] + 0.3, at[1] - 0.1), (ends[1] + 0.3, at[2] - 0.1), (ends[2] + 0.3, ts(hangup))):
        assert heard.sound(t0, t1) == 0.0, ("sound in a pause", t0 - at[0], t1 - at[0])
    agent_gone = ami.find(lambda e: e.event == "Hangup" and e.get("Channel", "").startswith("PJSIP/1001-"), since)
    assert agent_gone, "the agent's call ended with the caller's"
    print("AMI pauses (s): " + ", ".join(f"{k} {v:.3f}" for k, v in pauses.items()))
    print("heard pauses (s): " + ", ".join(f"{k} {v:.3f}" for k, v in heard_pauses.items()))


async def test_sip_caller_speaking_clearly_after_the_ask_is_back_with_the_agent(
        switch, ami: AmiRecorder, make_controller, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        caller, agent, mine, since = await stack.enter_async_context(
            call_with_agent(switch, ami, make_controller, tmp_path, "13800000052", stack))
        await asyncio.sleep(1.0)  # pacing: a second of the call before the agent gives up on it
        await agent_keys_faint(agent)
        [ask_end] = await ami.wait_for(lambda e: e.event == "AGIExecEnd" and e.get("Uniqueid") == caller.uid
                                       and "/unclear_ask " in e.get("Command", ""), timeout=30, since=since)
        # After the ask the caller speaks up: normal speech (the file starts with 1 s of quiet).
        await caller.peer.replace(Audio(speech(switch)), Audio(silence(60, PCMU)))
        [returned] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrUnclearLine"
                                        and e.get("Uniqueid") == caller.uid and e.get("Stage") == "returned",
                                        timeout=15, since=since)
        assert returned["During"] == "pause1", returned
        [back] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == caller.uid
                                    and ts(e) > ts(returned), timeout=10, since=since)
        assert back["BridgeUniqueid"] == mine["BridgeUniqueid"], "back in the agent's own bridge"
        await asyncio.sleep(2.5)  # pacing: listen to the agent again
        heard = caller.heard()
        assert not ami.find(released(caller.uid), since), "the caller was never released"
    stages = [e["Stage"] for e in user_events(ami, "IvrUnclearLine", since, Uniqueid=caller.uid)]
    assert stages == ["ask", "returned"], stages
    [at] = heard_in_order(heard, ["unclear_ask"], after=ts(ask_end) - dur("unclear_ask") - 1.0)
    assert heard.find(prompt("unclear_ask"), after=at + dur("unclear_ask"))[1] < HEARD, "no second ask"
    pitch = heard.pitch(ts(back) + 0.5, ts(back) + 2.0)
    assert abs(pitch - AGENT_HZ["1001"]) < 20, pitch
    print(f"clear speech -> returned {ts(returned) - ts(ask_end):.3f} s after the ask ended; "
          f"the caller hears the agent again ({pitch:.0f} Hz)")
