"""A called-back customer answers by speech (issue 18), on the real switch with the whole
controller, with the rig of ``test_callbacks.py``: an agent who accepts, and a customer
routed at run time into the shipped-closed ``ivr-callback-number`` who never presses a key
and plays test audio into the call (``ivr-test/caller_hello``: 1 s of quiet, "hello?";
``ivr-test/machine_greeting``: an answering machine's 8.6 s greeting and its beep; each
followed by ``ivr-test/silence``, since over Local channels no audio flows otherwise and a
burst of speech only ends on received quiet).

Prints the figures: each TALK_DETECT burst the switch reported on the customer's channel,
and the time from the customer's answer to the outcome.
"""

from __future__ import annotations

from typing import Any

from tests.integration.amitools import AmiRecorder, ts, until
from tests.integration.test_callbacks import (
    ACCEPTS,
    _status,
    config,
    queue_of,
    remove_customers,
    request,
    row,
    setup,
    wait_stage,
)


def bursts(ami: AmiRecorder, number: str, since: int) -> list[tuple[str, float, str]]:
    """The customer channel's TALK_DETECT events: (kind, Asterisk timestamp, Duration)."""
    return [(e.event, ts(e), e.get("Duration", "")) for e in ami.find(
        lambda e: e.event in ("ChannelTalkingStart", "ChannelTalkingStop")
        and e.get("Channel", "").startswith(f"Local/{number}@ivr-callback-number"), since)]


def answered_at(ami: AmiRecorder, number: str, since: int) -> float:
    [up] = ami.find(lambda e: e.event == "Newstate" and e.get("ChannelStateDesc") == "Up"
                    and e.get("Channel", "").startswith(f"Local/{number}@ivr-callback-number")
                    and e.get("Channel", "").endswith(";1"), since)[:1]
    return ts(up)


def customer_prompts(ami: AmiRecorder, number: str, since: int) -> list[str]:
    return [e["Command"].split()[2].rsplit("/", 1)[1] for e in ami.find(
        lambda e: e.event == "AGIExecStart" and e.get("Command", "").startswith("STREAM FILE")
        and e.get("Channel", "").startswith(f"Local/{number}@ivr-callback-number"), since)]


async def placed(ami: AmiRecorder, make_controller: Any, agent: str, number: str, audio: str,
                 item: str) -> tuple[Any, int]:
    """A controller, an agent who accepts, a customer who answers and plays ``audio`` then
    quiet, and a call-back for them requested; returns the controller and where the
    events of the attempt start."""
    await setup(ami, {agent: ACCEPTS}, {number: [
        "Answer()", f"Playback(ivr-test/{audio})", "Playback(ivr-test/silence)", "Hangup()"]})
    ctl = await make_controller(config([agent]))
    await queue_of(ctl)
    since = len(ami.events)
    await request(ctl, number, f"test-{item}", item)
    return ctl, since


async def test_a_customer_who_says_hello_is_bridged_without_a_key(ami: AmiRecorder, make_controller: Any) -> None:
    """The customer answers, says "hello?" and waits: a person. Bridged with the agent who
    accepted, without pressing a key and without hearing "press a key"."""
    number = "13900000021"
    ctl, since = await placed(ami, make_controller, "2021", number, "caller_hello", "cb-hello")
    [connected] = await wait_stage(ami, "connected", timeout=40, since=since)
    assert (connected["CallbackId"], connected.get("Live")) == ("cb-hello", "speech")
    [agent_in] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == connected["Uniqueid"],
                                    timeout=10, since=since)
    [customer_in] = await ami.wait_for(
        lambda e: e.event == "BridgeEnter" and e["BridgeUniqueid"] == agent_in["BridgeUniqueid"]
        and e["Channel"].startswith(f"Local/{number}@ivr-callback-number"), timeout=10, since=since)
    assert not ami.find(lambda e: e.event == "DTMFEnd" and number in e.get("Channel", ""), since), "no key pressed"
    played = customer_prompts(ami, number, since)
    assert "callback_greeting" in played and "callback_press" not in played, played
    heard = bursts(ami, number, since)
    stops = [int(d) for kind, _, d in heard if kind == "ChannelTalkingStop"]
    assert stops and 100 <= stops[0] <= 2500, heard
    up = answered_at(ami, number, since)
    print(f"\nperson: bursts {heard} (answered {up:.3f}); bridged {ts(customer_in) - up:.2f} s after the answer")
    await until(lambda: _status(ctl, "cb-hello", "done"), 10, "the call-back done")
    assert (await row(ctl, "cb-hello"))["outcome"] == "connected"
    for ch in await ami.channels():
        if ch["Channel"].startswith(f"Local/{number}@ivr-callback-number"):
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})
    await remove_customers(ami, [number])


async def test_an_answering_machine_talking_on_is_not_bridged(ami: AmiRecorder, make_controller: Any) -> None:
    """The customer's answering machine plays its long greeting: the outcome is ``machine``
    (one of the customer's attempts used, retried after the backoff); never bridged."""
    number = "13900000022"
    ctl, since = await placed(ami, make_controller, "2022", number, "machine_greeting", "cb-machine-speech")
    [m] = await wait_stage(ami, "machine", timeout=40, since=since)
    assert (m["CallbackId"], m["Status"]) == ("cb-machine-speech", "open")
    r = await row(ctl, "cb-machine-speech")
    assert (r["attempts"], r["outcome"]) == (1, "machine")
    assert not ami.find(lambda e: e.event == "BridgeEnter" and number in e.get("Channel", ""), since), "never bridged"
    heard = bursts(ami, number, since)
    assert heard and heard[0][0] == "ChannelTalkingStart", "the machine's speech was heard"
    up = answered_at(ami, number, since)
    print(f"\nmachine: bursts {heard} (answered {up:.3f}); outcome {ts(m) - up:.2f} s after the answer")
    assert "callback_press" not in customer_prompts(ami, number, since)
    await ctl.callbacks.cancel("cb-machine-speech")
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Channel", "").startswith(
        f"Local/{number}@ivr-callback-number") and e.get("Channel", "").endswith(";2"), timeout=10, since=since)
    await remove_customers(ami, [number])


async def test_amd_on_the_same_audio_for_comparison(ami: AmiRecorder) -> None:
    """The alternative not taken, measured: Asterisk's AMD() (amd.conf as shipped) on the same
    customer audio, run right at the answer as it would have to be. Prints each verdict and
    how long the channel spent in AMD (dead air for the customer: no greeting meanwhile)."""
    names = ["caller_hello", "machine_greeting", "caller_speech", "line_noise", "silence"]
    since = len(ami.events)
    for name in names:
        await ami.add_dialplan("test-amd-player", name, [
            "Answer()", f"Playback(ivr-test/{name})", "Playback(ivr-test/silence)", "Hangup()"])
        await ami.add_dialplan("test-amd-listener", name, [
            "Answer()", "AMD()", "UserEvent(IvrTestAmd,Name: ${EXTEN},Status: ${AMDSTATUS},Cause: ${AMDCAUSE})",
            "Hangup()"])
        await ami.originate(f"Local/{name}@test-amd-player/n", "test-amd-listener", name)
    done = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrTestAmd",
                              timeout=30, count=len(names), since=since)
    figures = {}
    for e in done:
        [began] = ami.find(lambda x, e=e: x.event == "Newexten" and x.get("Application") == "AMD"
                           and x.get("Uniqueid") == e.get("Uniqueid"), since)[:1]
        figures[e["Name"]] = (e["Status"], e["Cause"], round(ts(e) - ts(began), 2))
    print(f"\nAMD() as shipped (status, cause, s in AMD): {figures}")
    assert set(figures) == set(names) and all(f[0] for f in figures.values()), figures
