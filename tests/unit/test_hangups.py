"""R6 hang-up order, replayed from AMI event sequences recorded on the embedded Asterisk 22
(Local-channel caller and agent; the caller's channel is the one whose Uniqueid is the
Linkedid). Recorded with: caller hangs up first while bridged, agent hangs up first,
an AMI ``Hangup`` of the bridged caller (the switch ends the call), the caller hanging
up while the agent still rings, the IVR releasing the call (dialplan ``Hangup()``), and
(from tests/integration/test_dashboard.py) an agent who answered through ivr-agents and
hung up before the caller was bridged to it."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.events import CallEvent, EventBus
from ivr.hangups import HangupTracker, hung_up_first
from tests import present

# name: (Linkedid, [(Event, Channel, Uniqueid, Cause, Timestamp), ...])
RECORDED: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
    'caller_first': ('1795458969.0', [
        ('Newchannel', 'Local/c@test-hcaller-00000000;1', '1795458969.0', '', '1795458969.773215'),
        ('Newchannel', 'Local/c@test-hcaller-00000000;2', '1795458969.1', '', '1795458969.773292'),
        ('Newchannel', 'Local/a@test-hagent-00000001;1', '1795458969.2', '', '1795458969.773930'),
        ('Newchannel', 'Local/a@test-hagent-00000001;2', '1795458969.3', '', '1795458969.773965'),
        ('BridgeEnter', 'Local/a@test-hagent-00000001;1', '1795458969.2', '', '1795458970.775627'),
        ('BridgeEnter', 'Local/c@test-hcaller-00000000;1', '1795458969.0', '', '1795458970.775633'),
        ('SoftHangupRequest', 'Local/c@test-hcaller-00000000;2', '1795458969.1', '16', '1795458971.774741'),
        ('HangupRequest', 'Local/c@test-hcaller-00000000;1', '1795458969.0', '16', '1795458971.774747'),
        ('Hangup', 'Local/c@test-hcaller-00000000;2', '1795458969.1', '16', '1795458971.774752'),
        ('BridgeLeave', 'Local/c@test-hcaller-00000000;1', '1795458969.0', '', '1795458971.775306'),
        ('SoftHangupRequest', 'Local/c@test-hcaller-00000000;1', '1795458969.0', '16', '1795458971.775345'),
        ('Hangup', 'Local/c@test-hcaller-00000000;1', '1795458969.0', '16', '1795458971.775350'),
        ('BridgeLeave', 'Local/a@test-hagent-00000001;1', '1795458969.2', '', '1795458971.775625'),
        ('HangupRequest', 'Local/a@test-hagent-00000001;2', '1795458969.3', '16', '1795458971.775643'),
        ('Hangup', 'Local/a@test-hagent-00000001;1', '1795458969.2', '16', '1795458971.775648'),
        ('SoftHangupRequest', 'Local/a@test-hagent-00000001;2', '1795458969.3', '16', '1795458971.775847'),
        ('Hangup', 'Local/a@test-hagent-00000001;2', '1795458969.3', '16', '1795458971.775857'),
    ]),
    'agent_first': ('1795458971.4', [
        ('Newchannel', 'Local/c@test-hcaller-00000002;1', '1795458971.4', '', '1795458971.784297'),
        ('Newchannel', 'Local/c@test-hcaller-00000002;2', '1795458971.5', '', '1795458971.784307'),
        ('Newchannel', 'Local/a@test-hagent-00000003;1', '1795458971.6', '', '1795458971.785611'),
        ('Newchannel', 'Local/a@test-hagent-00000003;2', '1795458971.7', '', '1795458971.785617'),
        ('BridgeEnter', 'Local/a@test-hagent-00000003;1', '1795458971.6', '', '1795458972.787451'),
        ('BridgeEnter', 'Local/c@test-hcaller-00000002;1', '1795458971.4', '', '1795458972.788259'),
        ('SoftHangupRequest', 'Local/a@test-hagent-00000003;2', '1795458971.7', '16', '1795458974.788675'),
        ('HangupRequest', 'Local/a@test-hagent-00000003;1', '1795458971.6', '16', '1795458974.788716'),
        ('Hangup', 'Local/a@test-hagent-00000003;2', '1795458971.7', '16', '1795458974.788722'),
        ('BridgeLeave', 'Local/a@test-hagent-00000003;1', '1795458971.6', '', '1795458974.788749'),
        ('BridgeLeave', 'Local/c@test-hcaller-00000002;1', '1795458971.4', '', '1795458974.788756'),
        ('Hangup', 'Local/a@test-hagent-00000003;1', '1795458971.6', '16', '1795458974.788760'),
        ('SoftHangupRequest', 'Local/c@test-hcaller-00000002;1', '1795458971.4', '16', '1795458974.788802'),
        ('HangupRequest', 'Local/c@test-hcaller-00000002;2', '1795458971.5', '16', '1795458974.788806'),
        ('Hangup', 'Local/c@test-hcaller-00000002;1', '1795458971.4', '16', '1795458974.788810'),
        ('SoftHangupRequest', 'Local/c@test-hcaller-00000002;2', '1795458971.5', '16', '1795458974.788879'),
        ('Hangup', 'Local/c@test-hcaller-00000002;2', '1795458971.5', '16', '1795458974.788883'),
    ]),
    'system': ('1795459012.0', [
        ('Newchannel', 'Local/system@test-hcaller-00000000;1', '1795459012.0', '', '1795459012.616141'),
        ('Newchannel', 'Local/system@test-hcaller-00000000;2', '1795459012.1', '', '1795459012.616191'),
        ('Newchannel', 'Local/system@test-hagent-00000001;1', '1795459012.2', '', '1795459012.617069'),
        ('Newchannel', 'Local/system@test-hagent-00000001;2', '1795459012.3', '', '1795459012.617079'),
        ('BridgeEnter', 'Local/system@test-hagent-00000001;1', '1795459012.2', '', '1795459012.617804'),
        ('BridgeEnter', 'Local/system@test-hcaller-00000000;1', '1795459012.0', '', '1795459012.617921'),
        ('BridgeLeave', 'Local/system@test-hcaller-00000000;1', '1795459012.0', '', '1795459012.619583'),
        ('BridgeLeave', 'Local/system@test-hagent-00000001;1', '1795459012.2', '', '1795459012.620011'),
        ('HangupRequest', 'Local/system@test-hagent-00000001;2', '1795459012.3', '16', '1795459012.620020'),
        ('Hangup', 'Local/system@test-hagent-00000001;1', '1795459012.2', '16', '1795459012.620025'),
        ('SoftHangupRequest', 'Local/system@test-hagent-00000001;2', '1795459012.3', '16', '1795459012.620029'),
        ('Hangup', 'Local/system@test-hagent-00000001;2', '1795459012.3', '16', '1795459012.620033'),
        ('SoftHangupRequest', 'Local/system@test-hcaller-00000000;1', '1795459012.0', '16', '1795459012.620043'),
        ('HangupRequest', 'Local/system@test-hcaller-00000000;2', '1795459012.1', '16', '1795459012.620048'),
        ('Hangup', 'Local/system@test-hcaller-00000000;1', '1795459012.0', '16', '1795459012.620058'),
        ('SoftHangupRequest', 'Local/system@test-hcaller-00000000;2', '1795459012.1', '16', '1795459012.620243'),
        ('Hangup', 'Local/system@test-hcaller-00000000;2', '1795459012.1', '16', '1795459012.620247'),
    ]),
    'ringing': ('1795459012.4', [
        ('Newchannel', 'Local/ringing@test-hcaller-00000002;1', '1795459012.4', '', '1795459012.629414'),
        ('Newchannel', 'Local/ringing@test-hcaller-00000002;2', '1795459012.5', '', '1795459012.629483'),
        ('Newchannel', 'Local/ringing@test-hagent-00000003;1', '1795459012.6', '', '1795459012.630377'),
        ('Newchannel', 'Local/ringing@test-hagent-00000003;2', '1795459012.7', '', '1795459012.630388'),
        ('SoftHangupRequest', 'Local/ringing@test-hcaller-00000002;2', '1795459012.5', '16', '1795459013.631471'),
        ('HangupRequest', 'Local/ringing@test-hcaller-00000002;1', '1795459012.4', '16', '1795459013.631478'),
        ('Hangup', 'Local/ringing@test-hcaller-00000002;2', '1795459012.5', '16', '1795459013.631484'),
        ('HangupRequest', 'Local/ringing@test-hagent-00000003;2', '1795459012.7', '16', '1795459013.631506'),
        ('Hangup', 'Local/ringing@test-hagent-00000003;1', '1795459012.6', '16', '1795459013.631510'),
        ('SoftHangupRequest', 'Local/ringing@test-hcaller-00000002;1', '1795459012.4', '16', '1795459013.631523'),
        ('Hangup', 'Local/ringing@test-hcaller-00000002;1', '1795459012.4', '16', '1795459013.631544'),
        ('SoftHangupRequest', 'Local/ringing@test-hagent-00000003;2', '1795459012.7', '16', '1795459013.631549'),
        ('Hangup', 'Local/ringing@test-hagent-00000003;2', '1795459012.7', '16', '1795459013.631553'),
    ]),
    'released': ('1795459013.8', [
        ('Newchannel', 'Local/released@test-hcaller-00000004;1', '1795459013.8', '', '1795459013.642248'),
        ('Newchannel', 'Local/released@test-hcaller-00000004;2', '1795459013.9', '', '1795459013.642262'),
        ('SoftHangupRequest', 'Local/released@test-hcaller-00000004;1', '1795459013.8', '16', '1795459014.643488'),
        ('HangupRequest', 'Local/released@test-hcaller-00000004;2', '1795459013.9', '16', '1795459014.643495'),
        ('Hangup', 'Local/released@test-hcaller-00000004;1', '1795459013.8', '16', '1795459014.643502'),
        ('SoftHangupRequest', 'Local/released@test-hcaller-00000004;2', '1795459013.9', '16', '1795459014.643750'),
        ('Hangup', 'Local/released@test-hcaller-00000004;2', '1795459013.9', '16', '1795459014.643761'),
    ]),
    # ivr-agents with G(): the agent answered and hung up before the caller's Bridge().
    'answered_not_bridged': ('1795459917.0', [
        ('Newchannel', 'Local/x@test-caller-00000000;1', '1795459917.0', '', '1795459917.511094'),
        ('Newchannel', 'Local/x@test-caller-00000000;2', '1795459917.1', '', '1795459917.511226'),
        ('Newchannel', 'Local/1001@test-agent-00000001;1', '1795459917.2', '', '1795459917.514495'),
        ('Newchannel', 'Local/1001@test-agent-00000001;2', '1795459917.3', '', '1795459917.514581'),
        ('DialEnd', 'Local/x@test-caller-00000000;1', '1795459917.0', '', '1795459934.513689',
         {'DestUniqueid': '1795459917.2', 'DialStatus': 'ANSWER'}),
        ('SoftHangupRequest', 'Local/1001@test-agent-00000001;2', '1795459917.3', '16', '1795459935.534308'),
        ('HangupRequest', 'Local/1001@test-agent-00000001;1', '1795459917.2', '16', '1795459935.534315'),
        ('Hangup', 'Local/1001@test-agent-00000001;2', '1795459917.3', '16', '1795459935.534320'),
        ('SoftHangupRequest', 'Local/1001@test-agent-00000001;1', '1795459917.2', '16', '1795459935.534326'),
        ('Hangup', 'Local/1001@test-agent-00000001;1', '1795459917.2', '16', '1795459935.534337'),
        ('SoftHangupRequest', 'Local/x@test-caller-00000000;1', '1795459917.0', '16', '1795459937.471330'),
        ('HangupRequest', 'Local/x@test-caller-00000000;2', '1795459917.1', '16', '1795459937.471356'),
        ('SoftHangupRequest', 'Local/x@test-caller-00000000;2', '1795459917.1', '16', '1795459937.472950'),
        ('Hangup', 'Local/x@test-caller-00000000;2', '1795459917.1', '16', '1795459937.473033'),
        ('Hangup', 'Local/x@test-caller-00000000;1', '1795459917.0', '16', '1795459937.473105'),
    ]),
}


def events(name: str, context: str = "ivr-inbound") -> list[dict[str, str]]:
    linkedid, rows = RECORDED[name]
    out = []
    for kind, channel, uid, cause, stamp, *extra in rows:
        e = {"Event": kind, "Channel": channel, "Uniqueid": uid, "Linkedid": linkedid,
             "Timestamp": stamp, "Context": context if uid == linkedid else "test-hagent",
             **(extra[0] if extra else {})}
        if cause:
            e["Cause"] = cause
        out.append(e)
    return out


@pytest.mark.parametrize(("name", "side", "channel"), [
    ("caller_first", "caller", "Local/c@test-hcaller-00000000;1"),
    ("agent_first", "agent", "Local/a@test-hagent-00000003;1"),
    ("system", "system", "Local/system@test-hcaller-00000000;1"),
    ("ringing", "caller", "Local/ringing@test-hcaller-00000002;1"),
    ("released", "system", "Local/released@test-hcaller-00000004;1"),
    ("answered_not_bridged", "agent", "Local/1001@test-agent-00000001;1"),
])
def test_recorded_sequences(name: str, side: str, channel: str) -> None:
    verdict = hung_up_first(events(name))
    assert verdict is not None
    assert (verdict.side, verdict.channel, verdict.cause) == (side, channel, "16")


def test_bridged_flag_tells_a_hang_up_in_conversation() -> None:
    assert present(hung_up_first(events("agent_first"))).bridged
    assert not present(hung_up_first(events("ringing"))).bridged


def test_soft_hangup_of_a_bridged_channel_is_the_switch() -> None:
    seq = [
        {"Event": "BridgeEnter", "Uniqueid": "1.0", "Linkedid": "1.0", "Channel": "PJSIP/trunk-1"},
        {"Event": "BridgeEnter", "Uniqueid": "1.1", "Linkedid": "1.0", "Channel": "PJSIP/1001-2"},
        {"Event": "SoftHangupRequest", "Uniqueid": "1.1", "Linkedid": "1.0", "Channel": "PJSIP/1001-2", "Cause": "16"},
        {"Event": "HangupRequest", "Uniqueid": "1.0", "Linkedid": "1.0", "Channel": "PJSIP/trunk-1", "Cause": "16"},
    ]
    assert present(hung_up_first(seq)).side == "system"


def test_an_agent_leg_that_never_answered_does_not_count() -> None:
    seq = [e for e in events("answered_not_bridged") if e["Event"] != "DialEnd"]
    assert present(hung_up_first(seq)).side == "system"


def test_caller_given_explicitly_and_no_hangup_at_all() -> None:
    seq = events("agent_first")
    # Told that the agent's channel is the caller's, the verdict flips.
    assert present(hung_up_first(seq, caller_uniqueid="1795458971.6")).side == "caller"
    assert hung_up_first([e for e in seq if e["Event"] in ("Newchannel", "BridgeEnter")]) is None
    assert hung_up_first([]) is None


def recording_bus(switch: str = "default", only: str = "") -> tuple[EventBus, list[CallEvent]]:
    """A bus that keeps what is published (``only``: events of that kind)."""
    published: list[CallEvent] = []

    class Recording(EventBus):
        def publish(self, event: CallEvent) -> None:
            if not only or event.kind == only:
                published.append(event)

    return Recording(switch=switch), published


def test_tracker_publishes_call_ended_once_the_last_channel_is_gone() -> None:
    bus, published = recording_bus()
    tracker = HangupTracker(bus)
    seq = events("agent_first")
    for e in seq[:-1]:
        tracker.on_event(e)
    # one channel still up; the call's start (a switch fact) is said once
    assert [e.kind for e in published] == ["call.started"] and tracker.calls
    started = published[0]
    assert started.origin == "switch" and started.call_id == "1795458971.4"
    assert started.at == pytest.approx(float(seq[0]["Timestamp"]))
    assert started.data == {"channel": seq[0]["Channel"]}  # the recorded caller has no number
    tracker.on_event(seq[-1])
    assert [e.kind for e in published] == ["call.started", "call.ended"]
    ended = published[-1]
    assert ended.kind == "call.ended" and ended.call_id == "1795458971.4" and ended.origin == "switch"
    assert ended.data["hung_up_first"] == "agent"
    assert ended.data["started_at"] == pytest.approx(float(seq[0]["Timestamp"]))
    assert ended.at == pytest.approx(float(seq[-1]["Timestamp"]))
    assert tracker.calls == {}


def test_two_nodes_following_the_same_switch_make_the_same_record_ids() -> None:
    """Issue 17: the start and the end of a call are switch facts, each node of a pair
    records them; their ids come from the switch's name and AMI fields only (never a
    node's clock), so both nodes' writes land once. Another switch: other ids."""
    seq = events("agent_first")
    runs = []
    for switch, clock in (("east", lambda: 1.0), ("east", lambda: 99.0), ("west", lambda: 1.0)):
        bus, published = recording_bus(switch)
        tracker = HangupTracker(bus, clock=clock)
        for e in seq:
            tracker.on_event(e)
        runs.append(published)
    a, b, other = ([(e.kind, e.id, e.at) for e in run] for run in runs)
    assert a == b and len(a) == 2
    assert not {i for _, i, _ in a} & {i for _, i, _ in other}


def test_a_call_closed_after_an_outage_is_the_leaders_guess_not_a_switch_fact() -> None:
    bus, published = recording_bus()
    tracker = HangupTracker(bus)
    for e in events("agent_first")[:-1]:
        tracker.on_event(e)
    tracker.reconcile([])  # the switch has no channel of it any more
    ended = published[-1]
    assert ended.kind == "call.ended" and ended.origin == "node"
    assert ended.data["reason"] == "ended-while-disconnected"


def test_tracker_ignores_channels_that_are_not_calls() -> None:
    bus, published = recording_bus()
    tracker = HangupTracker(bus)
    for e in events("caller_first", context="test-hcaller"):
        tracker.on_event(e)
    assert published == [] and tracker.calls == {}
