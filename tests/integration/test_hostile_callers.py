"""Hostile callers on the real switch (issue 13): a caller cannot use the agents' keys, and
a caller number carrying an AMI action changes nothing.

* A caller bridged with an agent keys the agents' codes ``*2 900123#`` and ``*8``: the
  digits reach the agent as DTMF and nothing else happens (no ``IvrTransferRequest`` /
  ``IvrHoldKey``, no transfer, no hold). The same keys from the agent still hold and
  transfer; the transfer target that confirmed becomes the caller's agent and has the
  keys too. Key events forged on a channel that is not an agent leg are refused by the
  controller (defence in depth) and counted.
* A SIP caller through the inbound trunk (pjsip.conf ``[anonymous]``) whose From user is
  ``13800%0D%0A%0D%0AAction%3A%20UserEvent%0D%0AUserEvent%3A%20IvrInjected...``: the
  dialplan cleans the number first; the controller sees ``13800``; no ``IvrInjected``
  event ever appears; the call is greeted, reaches an agent, is held and transferred.

The whole controller runs (ring monitor, hold, transfer) with Local-channel agents;
every wait is on an AMI event with a timeout.
"""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from ivr.prompts import prompt_duration
from tests import REPO
from tests.integration.amitools import AmiRecorder, until

pytestmark = pytest.mark.integration

AFTERNOON = datetime(2027, 3, 10, 15, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
BUILD = REPO / "prompts" / "build"
LANG = "zh-CN"
SIPP_SCENARIO = Path(__file__).parent / "sipp" / "hostile_caller.xml"
AGENTS_CTX = "test-hostile-agent"
KEYS_CTX = "test-hostile-keys"
CONFIG = (
    "[transfer]\nconfirm_timeout = 5.0\n\n"
    f'[[agents]]\nnumber = "1001"\nname = "One"\ndial = "Local/1001@{AGENTS_CTX}"\n\n'
    f'[[agents]]\nnumber = "1002"\nname = "Two"\ndial = "Local/1002@{AGENTS_CTX}"\n'
)
CALLER_KEYS = "*2900123#*8"  # what the caller keys: the transfer code with a number, the hold code
FEATURE_WINDOW = 4.0  # s after the last digit: features.conf transferdigittimeout is 3 s


def is_user_event(name: str) -> Any:
    return lambda e: e.event == "UserEvent" and e.get("UserEvent") == name


async def add_dialplan(ami: AmiRecorder) -> None:
    # Agents (the ;2 halves of Local/100N@test-hostile-agent): 1001 answers the hunt,
    # 1002 is the transfer target that answers and confirms with 1.
    await ami.add_dialplan(AGENTS_CTX, "1001", ["Answer()", "Wait(300)", "Hangup()"])
    await ami.add_dialplan(AGENTS_CTX, "q1", ["Answer()", "Wait(300)", "Hangup()"])  # a queue member
    await ami.add_dialplan(AGENTS_CTX, "1002", ["Answer()", "Wait(1)", "SendDTMF(1,,120)", "Wait(300)",
                                                "Hangup()"])
    await ami.add_dialplan("test-hostile-caller", "c", ["Answer()", "Wait(300)", "Hangup()"])
    # Key presses, run by redirecting a Local channel's ;2 half here: its digits arrive
    # on the ;1 half, the one bridged with the other party.
    await ami.add_dialplan(KEYS_CTX, "caller", [
        "SendDTMF(*2,,120)", "Wait(0.5)", "SendDTMF(900123#,,120)", "Wait(0.5)", "SendDTMF(*8,,120)",
        "Wait(300)"])
    await ami.add_dialplan(KEYS_CTX, "hold", ["SendDTMF(*8,,120)", "Wait(300)"])
    await ami.add_dialplan(KEYS_CTX, "transfer", ["SendDTMF(*2,,120)", "Wait(1)", "SendDTMF(1002#,,120)",
                                                  "Wait(300)"])
    # A channel that is not an agent leg raising the agents' key events itself (as a
    # misconfigured dialplan would): the controller must refuse them.
    await ami.add_dialplan(KEYS_CTX, "forge", [
        "UserEvent(IvrHoldKey)", "UserEvent(IvrTransferRequest,Target: 900123)",
        "UserEvent(HostileForged)", "Wait(300)"])


async def redirect(ami: AmiRecorder, channel: str, exten: str) -> None:
    reply = await ami.action({"Action": "Redirect", "Channel": channel, "Context": KEYS_CTX,
                              "Exten": exten, "Priority": "1"})
    assert reply.success, reply


def half2(channel: str) -> str:
    assert channel.endswith(";1"), channel
    return channel[:-1] + "2"


async def bridged_pair(ami: AmiRecorder, caller_prefix: str, since: int, timeout: float,
                       agent: str = "1001") -> tuple[Any, Any]:
    """The caller's BridgeEnter (channel name starting with ``caller_prefix``) and its
    agent's (``Local/<agent>@test-hostile-agent``), in the same bridge."""
    [caller] = await ami.wait_for(lambda e: e.event == "BridgeEnter"
                                  and e.get("Channel", "").startswith(caller_prefix),
                                  timeout=timeout, since=since)
    [peer] = await ami.wait_for(lambda e: e.event == "BridgeEnter"
                                and e.get("BridgeUniqueid") == caller["BridgeUniqueid"]
                                and e.get("Uniqueid") != caller["Uniqueid"], timeout=10, since=since)
    assert peer["Channel"].startswith(f"Local/{agent}@{AGENTS_CTX}-"), peer["Channel"]
    return caller, peer


def hold_state(uid: str, state: str) -> Any:
    return lambda e: (e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                      and e.get("Uniqueid") == uid and e.get("State") == state)


def transfer_state(uid: str, state: str) -> Any:
    return lambda e: (e.event == "UserEvent" and e.get("UserEvent") == "IvrTransfer"
                      and e.get("Uniqueid") == uid and e.get("State") == state)


async def held(ami: AmiRecorder, uid: str, since: int) -> None:
    """The caller hears the hold music (moved out to the controller's hold context)."""
    await ami.wait_for(lambda e: e.event == "MusicOnHoldStart" and e.get("Uniqueid") == uid,
                       timeout=10, since=since)


async def agent_holds_resumes_and_transfers(ami: AmiRecorder, caller: Any, agent: Any) -> Any:
    """The agent keys *8 (hold), *8 (resume), *2 1002# (transfer to agent 1002, who
    confirms); then agent 1002 keys *8: the new agent has the keys too. Returns 1002's
    BridgeEnter with the caller."""
    uid = caller["Uniqueid"]
    since = len(ami.events)
    await redirect(ami, half2(agent["Channel"]), "hold")
    [key] = await ami.wait_for(is_user_event("IvrHoldKey"), timeout=10, since=since)
    assert key["Uniqueid"] == agent["Uniqueid"]
    await ami.wait_for(hold_state(uid, "start"), timeout=10, since=since)
    await held(ami, uid, since)
    since = len(ami.events)
    await redirect(ami, half2(agent["Channel"]), "hold")
    await ami.wait_for(hold_state(uid, "resume"), timeout=10, since=since)
    await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") == uid
                       and e.get("BridgeUniqueid") == caller["BridgeUniqueid"], timeout=20, since=since)
    since = len(ami.events)
    await redirect(ami, half2(agent["Channel"]), "transfer")
    [request] = await ami.wait_for(is_user_event("IvrTransferRequest"), timeout=10, since=since)
    assert request["Uniqueid"] == agent["Uniqueid"] and request["Target"] == "1002"
    [done] = await ami.wait_for(transfer_state(uid, "completed"), timeout=40, since=since)
    assert done["Target"] == "1002"
    [joined] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Uniqueid") != uid
                                  and e.get("Channel", "").startswith(f"Local/1002@{AGENTS_CTX}-"),
                                  timeout=10, since=since)
    # The target that confirmed is the caller's agent now: its *8 holds the caller.
    since = len(ami.events)
    await redirect(ami, half2(joined["Channel"]), "hold")
    [key] = await ami.wait_for(is_user_event("IvrHoldKey"), timeout=10, since=since)
    assert key["Uniqueid"] == joined["Uniqueid"]
    await ami.wait_for(hold_state(uid, "start"), timeout=10, since=since)
    await held(ami, uid, since)
    return joined


async def hang_up_all(ami: AmiRecorder, needle: str) -> None:
    for ch in await ami.channels():
        if needle in ch["Channel"] or needle in ch.get("Linkedid", ""):
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})


def metric(ctl: Any, name: str) -> float:
    return ctl.metrics.registry.get_sample_value(name) or 0.0


async def test_caller_keying_agent_codes_only_sends_dtmf_to_the_agent(ami: AmiRecorder, make_controller) -> None:
    ctl = await make_controller(CONFIG, now=lambda: AFTERNOON)
    await add_dialplan(ami)
    since = len(ami.events)
    # The caller goes straight into the shipped agent hunt (the inbound flow is not the
    # subject here): the hunt dials agent 1001 with the pre-dial handler that arms its keys.
    await ami.originate("Local/c@test-hostile-caller", "ivr-agents", "s", caller_id='"Caller" <13800000013>')
    caller, agent = await bridged_pair(ami, "Local/c@test-hostile-caller-", since, timeout=30)
    linkedid = caller["Linkedid"]
    try:
        # The caller keys the agents' transfer and hold codes.
        since = len(ami.events)
        await redirect(ami, half2(caller["Channel"]), "caller")
        heard = await ami.wait_for(lambda e: e.event == "DTMFEnd" and e.get("Direction") == "Received"
                                   and e.get("Channel") == half2(agent["Channel"]),
                                   timeout=20, since=since, count=len(CALLER_KEYS))
        assert "".join(e["Digit"] for e in heard) == CALLER_KEYS  # all of it reached the agent
        await ami.expect_none(
            lambda e: (e.event == "UserEvent" and e.get("UserEvent") in (
                "IvrTransferRequest", "IvrHoldKey", "IvrHold", "IvrTransfer"))
            or (e.event in ("Newchannel", "DialBegin")
                and "ivr-transfer" in e.get("Channel", "") + e.get("DestChannel", "")),
            within=FEATURE_WINDOW, since=since)
        assert not ami.find(lambda e: e.event == "MusicOnHoldStart" and e.get("Linkedid") == linkedid, since)
        assert not ctl.hold.sessions and not ctl.transfer.transfers
        assert {r["Uniqueid"] for r in await ami.channels()
                if r.get("BridgeId") == caller["BridgeUniqueid"]} == {caller["Uniqueid"], agent["Uniqueid"]}

        # Defence in depth: key events raised on a channel that is not an agent leg (the
        # caller's own Local half) are refused by the controller and counted.
        since = len(ami.events)
        with capture_logs() as logs:
            await redirect(ami, half2(caller["Channel"]), "forge")
            await ami.wait_for(is_user_event("HostileForged"), timeout=10, since=since)
            await until(lambda: metric(ctl, "ivr_hold_keys_refused_total") == 1
                        and metric(ctl, "ivr_transfer_keys_refused_total") == 1, 5, "keys refused")
        assert {"hold.key_refused", "transfer.request_refused_not_agent"} <= {e["event"] for e in logs}
        await ami.expect_none(lambda e: (e.event == "UserEvent" and e.get("UserEvent") in ("IvrHold", "IvrTransfer"))
                              or e.event == "MusicOnHoldStart", within=2.0, since=since)

        # The agent's same keys still work: hold, resume, transfer; the new agent has them.
        await agent_holds_resumes_and_transfers(ami, caller, agent)
        assert metric(ctl, "ivr_hold_keys_refused_total") == 1
        assert metric(ctl, "ivr_transfer_keys_refused_total") == 1
    finally:
        await hang_up_all(ami, "test-hostile")
        await hang_up_all(ami, linkedid)


async def test_queue_member_has_the_keys_and_the_queue_caller_has_not(ami: AmiRecorder, make_controller) -> None:
    """A ``queue=agents`` hunt entry: Queue()'s b() arms the member's leg (the caller's
    keys reach the member as DTMF; the member's *8 holds the caller)."""
    ctl = await make_controller(CONFIG, now=lambda: AFTERNOON)
    await add_dialplan(ami)
    member = f"Local/q1@{AGENTS_CTX}/n"
    reply = await ami.action({"Action": "QueueAdd", "Queue": "agents", "Interface": member}, as_list=False)
    assert reply.success, reply
    since = len(ami.events)
    await ami.originate("Local/c@test-hostile-caller", "ivr-agents", "s", caller_id='"Caller" <13800000014>',
                        variables={"IVR_AGENTS": "queue=agents"})
    linkedid = ""
    try:
        caller, agent = await bridged_pair(ami, "Local/c@test-hostile-caller-", since, timeout=30, agent="q1")
        linkedid = caller["Linkedid"]
        since = len(ami.events)
        await redirect(ami, half2(caller["Channel"]), "caller")
        heard = await ami.wait_for(lambda e: e.event == "DTMFEnd" and e.get("Direction") == "Received"
                                   and e.get("Channel") == half2(agent["Channel"]),
                                   timeout=20, since=since, count=len(CALLER_KEYS))
        assert "".join(e["Digit"] for e in heard) == CALLER_KEYS
        await ami.expect_none(is_user_event("IvrTransferRequest"), within=FEATURE_WINDOW, since=since)
        assert not ami.find(lambda e: is_user_event("IvrHoldKey")(e) or is_user_event("IvrHold")(e), since)
        since = len(ami.events)
        await redirect(ami, half2(agent["Channel"]), "hold")
        [key] = await ami.wait_for(is_user_event("IvrHoldKey"), timeout=10, since=since)
        assert key["Uniqueid"] == agent["Uniqueid"]
        await ami.wait_for(hold_state(caller["Uniqueid"], "start"), timeout=10, since=since)
        await held(ami, caller["Uniqueid"], since)
        assert metric(ctl, "ivr_hold_keys_refused_total") == 0
    finally:
        await ami.action({"Action": "QueueRemove", "Queue": "agents", "Interface": member}, as_list=False)
        await hang_up_all(ami, "test-hostile")
        if linkedid:
            await hang_up_all(ami, linkedid)


# ---------------------------------------------------------------------------- SIP caller
class RawAmi:
    """Every byte an admin AMI session receives, unparsed: to see what a raw caller number
    does to the event stream."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int, username: str, secret: str) -> RawAmi:
        reader, self._writer = await asyncio.open_connection(host, port)
        self._writer.write(f"Action: Login\r\nUsername: {username}\r\nSecret: {secret}\r\n\r\n".encode())
        await self._writer.drain()

        async def pump() -> None:
            while chunk := await reader.read(65536):
                self.data += chunk

        self._task = asyncio.ensure_future(pump())
        await until(lambda: b"Authentication accepted" in self.data, 10, "raw AMI login")
        return self

    def frames(self) -> list[str]:
        return self.data.decode("utf-8", "replace").split("\r\n\r\n")

    async def close(self) -> None:
        self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sip_caller_with_an_ami_action_in_the_caller_number(switch, ami: AmiRecorder, make_controller,
                                                                  tmp_path: Path) -> None:
    ctl = await make_controller(CONFIG, now=lambda: AFTERNOON)
    await add_dialplan(ami)
    # What the controller's FastAGI routes are handed (the environment Asterisk sent).
    seen: list[dict[str, str]] = []
    for route in ("inbound", "agent-answered"):
        handler = ctl.agi.routes[route]

        async def spy(call: Any, handler: Any = handler) -> Any:
            seen.append(dict(call.headers))
            return await handler(call)

        ctl.agi.routes[route] = spy
    raw = await RawAmi().connect(switch.ami_host, switch.ami_port, switch.username, switch.secret)
    greeting = list(ctl.inbound.choose_greeting(AFTERNOON, ctl.config).prompts)
    press_ms = int((sum(prompt_duration(BUILD, LANG, p) for p in greeting) + 1.5) * 1000)
    since = len(ami.events)
    sipp = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPP_SCENARIO), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()),
        "-m", "1", "-set", "press_ms", str(press_ms), "-timeout", "150s", "-timeout_error", "-nostdin",
        f"127.0.0.1:{switch.sip_port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    uid = ""
    try:
        with capture_logs() as logs:
            # The caller's channel, from the first step after the cleaning (its Newchannel
            # event is cut short by the raw number: see the measurement below).
            [noop] = await ami.wait_for(lambda e: e.event == "Newexten"
                                        and e.get("Channel", "").startswith("PJSIP/anonymous-")
                                        and e.get("Application") == "NoOp", timeout=15, since=since)
            uid, chan = noop["Uniqueid"], noop["Channel"]
            assert noop["AppData"] == "ivr: inbound call from 13800" and noop["CallerIDNum"] == "13800"
            # Greeted in full, then the key press hands the caller to the agents.
            ends = await ami.wait_for(lambda e: e.event == "AGIExecEnd" and e.get("Uniqueid") == uid
                                      and e.get("Command", "").startswith("STREAM FILE"),
                                      timeout=30, since=since, count=len(greeting))
            assert [e["Command"].split()[2].rsplit("/", 1)[1] for e in ends] == greeting
            [responded] = await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("Uniqueid") == uid
                                             and e.get("Stage") == "responded", timeout=15, since=since)
            assert responded["Reason"] == "dtmf"
            caller, agent = await bridged_pair(ami, chan, since, timeout=30)
            await agent_holds_resumes_and_transfers(ami, caller, agent)
            await ami.action({"Action": "Hangup", "Channel": chan})
            await asyncio.wait_for(sipp.wait(), 15)
        out, err = await sipp.communicate()
        assert sipp.returncode == 0, (out + err).decode(errors="replace")[-2000:]
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
        await raw.close()
        await hang_up_all(ami, "test-hostile")
        if uid:
            await hang_up_all(ami, uid)

    # No injected action ever ran: no IvrInjected event, parsed or raw.
    assert not ami.find(is_user_event("IvrInjected"))
    frames = raw.frames()
    assert not [f for f in frames if f.startswith("Event: UserEvent") and "UserEvent: IvrInjected" in f]
    # The controller saw a clean caller: digits only, in every AGI environment.
    assert seen and {h["agi_callerid"] for h in seen} == {"13800"}, seen
    names = {h["agi_calleridname"] for h in seen}
    assert names == {"ZhangSan 张三"}, names  # the TAB is gone, the UTF-8 stays
    # Every event of the caller's channel from the cleaning on carries the clean number.
    mine = ami.find(lambda e: e.get("Uniqueid") == uid and "CallerIDNum" in e)
    first = next(i for i, e in enumerate(mine) if e is noop)
    assert {e["CallerIDNum"] for e in mine[first:]} == {"13800"}
    # Handled cleanly: no fallback, no AGI error, no malformed reply.
    assert not ami.find(lambda e: is_user_event("IvrFallback")(e) and e.get("Linkedid") == uid)
    bad = [e for e in logs if e.get("log_level") in ("error", "critical")
           or e["event"] in ("fastagi.agi_error", "fastagi.bad_request", "fastagi.handler_failed")
           or "malformed" in str(e)]
    assert not bad, bad
    # Measured: the AMI events that the raw number still cut short (a frame starting with
    # the payload follows each): only those raised before the dialplan's first step ran.
    cut = [re.match(r"Event: (\w+)", frames[i - 1]) for i, f in enumerate(frames)
           if i and f.startswith("Action: UserEvent")]
    carried = [m.group(1) if m else "?" for m in cut]
    print(f"AMI events cut short by the raw caller number: {carried}")
    assert set(carried) <= {"Newchannel", "Newexten", "Newstate", "DialplanStart", "VarSet",
                            "NewConnectedLine", "SuccessfulAuth", "InvalidAccountID"}, carried


async def test_agent_phone_without_password_is_challenged_not_taken_for_the_trunk(
        switch, ami: AmiRecorder, tmp_path: Path) -> None:
    """The anonymous trunk comes after identification by user name: a REGISTER or an
    INVITE from user 1001 (an agent endpoint) without its password is challenged (401),
    never accepted as an anonymous caller."""
    since = len(ami.events)
    sipp = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(Path(__file__).parent / "sipp" / "agent_without_password.xml"),
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_udp_port()), "-m", "1",
        "-timeout", "20s", "-timeout_error", "-nostdin", f"127.0.0.1:{switch.sip_port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    try:
        out, err = await asyncio.wait_for(sipp.communicate(), 30)
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
    assert sipp.returncode == 0, (out + err).decode(errors="replace")[-2000:]
    assert not ami.find(lambda e: e.event == "Newchannel" and "anonymous" in e.get("Channel", ""), since)
