"""R1 with a real SIP agent phone: pyVoIP registers to PJSIP as agent 1002 and answers
after a chosen delay; the full controller rings it through the agent hunt and raises the
ring alarm by the cn cadence."""

from __future__ import annotations

import threading
import time

from pyVoIP.VoIP import CallState, VoIPPhone

from tests.integration.amitools import ts
from tests.integration.conftest import _free_tcp_port

RING_SECONDS = 17.0  # the phone lets it ring into the 4th ring (cn: 5 s a ring)


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentPhone:
    """A pyVoIP phone that answers every call after ``delay`` s and holds it until the
    far end hangs up (pyVoIP drops calls whose callback thread has ended)."""

    def __init__(self, switch, number: str, delay: float) -> None:
        self.delay = delay
        self.answered = threading.Event()
        rtp = _free_udp_port() // 2 * 2
        self.phone = VoIPPhone(
            "127.0.0.1", switch.sip_port, number, switch.embedded.secrets().agents[number],
            myIP="127.0.0.1", callCallback=self._on_call, sipPort=_free_udp_port(),
            rtpPortLow=rtp, rtpPortHigh=rtp + 10,
        )

    def _on_call(self, call) -> None:
        time.sleep(max(0.0, self.delay - 1.0))  # pacing: answers after delay (pyVoIP calls back ~1 s after the INVITE)
        call.answer()
        self.answered.set()
        deadline = time.monotonic() + 30
        while call.state == CallState.ANSWERED and time.monotonic() < deadline:
            time.sleep(0.1)  # poll: pyVoIP's call state, bounded by the deadline

    def __enter__(self) -> AgentPhone:
        self.phone.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.phone.stop()


async def test_sip_phone_answering_in_the_fourth_ring_raises_one_warning(switch, ami, make_controller):
    await make_controller(
        f"[http]\nport = {_free_tcp_port()}\n\n"
        '[[agents]]\nnumber = "1002"\nname = "SIP agent"\ndial = "PJSIP/1002"\n'
    )
    await ami.add_dialplan("test-caller", "sip", ["Answer()", "Wait(40)", "Hangup()"])
    since = len(ami.events)
    with AgentPhone(switch, "1002", RING_SECONDS):
        await ami.wait_for(lambda e: e.event == "ContactStatus" and e.get("AOR") == "1002"
                           and e.get("ContactStatus") in ("Created", "Reachable", "NonQualified"),
                           timeout=15, since=since)  # registered (qualify is off for agents)
        await ami.originate("Local/sip@test-caller", "ivr-agents", "s")
        begin = (await ami.wait_for(lambda e: e.event == "DialBegin"
                                    and e.get("DestChannel", "").startswith("PJSIP/1002"),
                                    timeout=10, since=since))[0]
        end = (await ami.wait_for(lambda e: e.event == "DialEnd" and e.get("DestChannel", "").startswith("PJSIP/1002"),
                                  timeout=30, since=since))[0]
        assert end["DialStatus"] == "ANSWER"
        rang = ts(end) - ts(begin)
        assert 15.0 < rang < 20.0, rang  # answered in the 4th ring
        alarms = list(ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrRingAlarm", since))
        assert [(a["Agent"], a["Level"], a["Rings"]) for a in alarms] == [("1002", "warning", "3")]
        ringing = ami.find(lambda e: e.event == "Newstate" and e.get("ChannelStateDesc") == "Ringing"
                           and e.get("Channel") == begin["DestChannel"], since)[0]
        # Three cn periods after the phone began ringing (its 180 Ringing, ~1 s after the INVITE).
        assert 14.4 <= ts(alarms[0]) - ts(ringing) <= 15.6
        # The caller heard the agent's number, and no apology (not past six rings).
        await ami.wait_for(lambda e: e.event == "AGIExecStart" and "agent_service" in e.get("Command", ""),
                           timeout=15, since=since)
        assert not ami.find(lambda e: e.event == "AGIExecStart" and "ring_apology" in e.get("Command", ""), since)
        for ch in await ami.channels():
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})
