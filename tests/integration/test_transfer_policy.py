"""R5 policy on the switch: an agent phone's own transfer (SIP REFER) is refused, so every
transfer goes through the controller's confirmed warm transfer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.integration.amitools import AmiRecorder

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).parent / "sipp" / "refer_agent.xml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refer_from_an_agent_phone_is_refused(ami: AmiRecorder, switch) -> None:
    port = free_udp_port()
    await ami.add_dialplan("test-xfer-refer", "s", ["Answer()", "Wait(20)", "Hangup()"])
    sipp = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
        "-m", "1", "-set", "refer_to", "1002", "-timeout", "15s", "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        since = len(ami.events)
        reply = await ami.action({
            "Action": "Originate", "Channel": f"PJSIP/1001/sip:1001@127.0.0.1:{port}",
            "Context": "test-xfer-refer", "Exten": "s", "Priority": "1", "Async": "true",
            "ChannelId": f"refer-{port}"}, as_list=False)
        assert reply.success, reply
        await ami.wait_for(lambda e: e.event == "Newstate" and e.get("Uniqueid") == f"refer-{port}"
                           and e.get("ChannelState") == "6", timeout=10, since=since)
        # The phone's REFER is refused; the phone then hangs up by itself (BYE).
        (gone,) = await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == f"refer-{port}",
                                     timeout=15, since=since)
        await asyncio.wait_for(sipp.wait(), 15)
        assert sipp.stdout is not None and sipp.stderr is not None
        out = (await sipp.stdout.read() + await sipp.stderr.read()).decode(errors="replace")
        assert sipp.returncode == 0, out[-3000:]
        # Nothing was transferred: no transfer event, no new leg to the Refer-To number.
        moved = ami.find(lambda e: e.event in ("BlindTransfer", "AttendedTransfer")
                         or (e.event == "Newchannel" and "1002" in e.get("Channel", "")), since)
        assert moved == []
        # The agent's leg stayed in its dialplan (Wait) until the phone's own BYE.
        steps = [(e["Context"], e["Application"]) for e in ami.find(
            lambda e: e.event == "Newexten" and e.get("Uniqueid") == f"refer-{port}"
            and e.get("Application") != "AppDial2", since)]
        assert steps == [("test-xfer-refer", "Answer"), ("test-xfer-refer", "Wait")]
        assert gone["Context"] == "test-xfer-refer"
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
