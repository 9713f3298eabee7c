"""The controller's lean AMI reader (ivr/ami/protocol.py) against panoramisk's own: the
same messages from the same bytes, replies reaching their actions, events their
subscribers; and the cached routing in ``LeanManager.dispatch`` / ``AmiConnection._dispatch``."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import pytest
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message
from structlog.testing import capture_logs

from ivr.ami.connection import AmiConnection
from ivr.ami.manager import LeanManager
from ivr.ami.protocol import AmiMessage, AmiProtocol, parse_message
from tests.fakes import ami_reader

RECORDED = Path(__file__).resolve().parents[2] / "bench" / "data" / "ami_stream.raw.gz"


def same_message(ours: Message | None, theirs: Message | None) -> None:
    """Everything a reader of a panoramisk Message can see."""
    if theirs is None:
        assert ours is None
        return
    assert isinstance(ours, Message)
    assert list(ours.items()) == list(theirs.items())
    assert (ours.id, ours.action_id, ours.success, ours.content) == (
        theirs.id, theirs.action_id, theirs.success, theirs.content)
    assert repr(ours) == repr(theirs) and len(ours) == len(theirs)
    assert ours._store == theirs._store
    for key in theirs:
        for spelling in (key, key.lower(), key.upper()):
            assert ours[spelling] == theirs[spelling] and ours.get(spelling) == theirs.get(spelling)
            assert spelling in ours


def feed(proto: AMIProtocol, data: bytes, size: int) -> list[Message]:
    for i in range(0, len(data), size):
        proto.data_received(data[i:i + size])
    return proto.factory.events


# -- the parser -------------------------------------------------------------------------
def test_every_frame_of_the_recorded_stream_parses_as_panoramisk_parses_it():
    frames = gzip.decompress(RECORDED.read_bytes()).decode("ascii", "ignore").split("\r\n\r\n")
    parsed = 0
    for raw in frames:
        frame = raw.strip()
        theirs = Message.from_line(frame)
        same_message(parse_message(frame), theirs)
        parsed += theirs is not None
    assert parsed > 4000


@pytest.mark.parametrize("frame", [
    "Event: VarSet\r\nVariable: A\r\nVariable: B\r\nvariable: c",  # repeated, and equal but for case
    "Response: Follows\r\nActionID: 7\r\nOutput line\r\n--END COMMAND--\r\n\r\n",  # body: last line
    "Response: Fail\r\nMessage: x\r\n",
    "Event: AsyncAGIExec\r\nResult: 200%20result%3D1%20\r\nresult: 200%20result%3D0",  # unquoted
    "Event: AGIExecEnd\r\nResult: a%20\r\nResult: b",
    "Event: X\r\nno separator line\r\nKey:no space\r\nKey2: value: with: colons\r\n: empty key",
    "Event: X\r\nContent: shadowed by the body key",
    "Event: Y\r\nEvent: Z",
    "Action: Ping",  # neither Event nor Response
    "event: lowercase is not an event to panoramisk",
    "",
])
def test_edge_frames_parse_as_panoramisk_parses_them(frame):
    same_message(parse_message(frame), Message.from_line(frame))


def test_message_is_a_case_insensitive_panoramisk_message():
    m = parse_message("Event: Newstate\r\nUniqueid: 1.1\r\nChannelState: 5")
    assert isinstance(m, Message) and isinstance(m, AmiMessage)
    assert m.event == "Newstate" and m.uniqueid == "1.1" and m.missing == ""
    assert m["CHANNELSTATE"] == "5" and m.get("Nope") is None and m.get("Nope", "d") == "d"
    with pytest.raises(KeyError):
        m["Nope"]
    m["NEW"] = "x"
    m["channelstate"] = "6"
    assert list(m) == ["Event", "Uniqueid", "channelstate", "content", "NEW"]
    assert m == Message({"Event": "Newstate", "Uniqueid": "1.1", "channelstate": "6", "NEW": "x"})
    assert dict(AmiMessage({"A": "1"}, "body")) == {"A": "1", "content": "body"}


# -- the protocol -----------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 7, 100, 65536])
def test_stream_in_any_chunking_gives_panoramisks_events(size):
    data = gzip.decompress(RECORDED.read_bytes())[:60000]
    ours = feed(ami_reader(), data, size)
    theirs = feed(ami_reader(AMIProtocol), data, 65536)
    assert len(ours) == len(theirs) > 100
    for a, b in zip(ours, theirs, strict=True):
        same_message(a, b)


async def test_replies_complete_their_actions_and_events_still_flow():
    proto = ami_reader()
    proto.data_received(b"Asterisk Call Manager/11.0.0\r\n")
    assert proto.version == "11.0.0"
    ping = proto.send({"Action": "Ping", "ActionID": "p1"})
    listing = proto.send({"Action": "CoreShowChannels", "ActionID": "c1"}, as_list=True)
    proto.data_received(
        b"Event: Newchannel\r\nUniqueid: 1.1\r\n\r\n"
        b"Response: Success\r\nActionID: p1\r\nPing: Pong\r\n\r\n"
        b"Response: Success\r\nActionID: c1\r\nEventList: start\r\n\r\n"
        b"Event: CoreShowChannel\r\nActionID: c1\r\nUniqueid: 1.1\r\n\r\n"
        b"Event: Hangup\r\nActionID: unknown\r\nUniqueid: 2.2\r\n\r\n"  # not ours: an event
        b"Event: CoreShowChannelsComplete\r\nActionID: c1\r\nEventList: Complete\r\n\r\n")
    assert (await ping).get("Ping") == "Pong"
    assert [m.get("Event") or m.get("Response") for m in await listing] == [
        "Success", "CoreShowChannel", "CoreShowChannelsComplete"]
    assert [e["Uniqueid"] for e in proto.factory.events] == ["1.1", "2.2"]
    assert proto.responses == {}


def test_repeated_event_header_is_dropped_and_reading_goes_on():
    """panoramisk raised out of data_received here (a list has no .lower()), which
    closes the connection; the lean reader drops that one frame."""
    with pytest.raises(AttributeError):
        ami_reader(AMIProtocol).data_received(b"Event: A\r\nEvent: B\r\n\r\n")
    proto = ami_reader()
    with capture_logs() as logs:
        proto.data_received(b"Event: A\r\nEvent: B\r\n\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n")
    assert [e.event for e in proto.factory.events] == ["Hangup"]
    assert [(x["event"], x["ami_event"]) for x in logs] == [("ami.malformed_frame", ["A", "B"])]


def test_shutdown_is_dispatched_and_closes():
    proto = ami_reader()
    proto.data_received(b"Event: Shutdown\r\nShutdown: Cleanly\r\n\r\n")
    assert [e.event for e in proto.factory.events] == ["Shutdown"]
    assert len(proto.factory.lost) == 1 and proto.closed


# -- routing ------------------------------------------------------------------------------
async def test_manager_dispatch_routes_by_pattern_and_sees_later_registrations():
    manager = LeanManager(lambda _exc: None, loop=asyncio.get_running_loop())
    seen: list[tuple[str, str]] = []
    manager.register_event("Dial*", lambda _m, e: seen.append(("dial", e.event)))
    assert manager.dispatch(parse_message("Event: DialBegin")) == ["Dial*"]
    assert manager.dispatch(parse_message("Event: Hangup")) == []
    manager.register_event("*", lambda _m, e: seen.append(("all", e.event)))
    ran = asyncio.Event()

    async def later(_m: Any, _e: Any) -> None:
        ran.set()

    manager.register_event("Hangup", later)
    event = parse_message("Event: Hangup")
    assert event is not None
    assert sorted(manager.dispatch(event)) == ["*", "Hangup"] and event.manager is manager
    manager.dispatch(parse_message("Event: DialBegin"))
    await asyncio.wait_for(ran.wait(), 1)
    assert seen == [("dial", "DialBegin"), ("all", "Hangup"), ("dial", "DialBegin"), ("all", "DialBegin")]
    assert manager.config["protocol_factory"] is AmiProtocol


def test_connection_dispatch_follows_subscribe_and_unsubscribe():
    conn = AmiConnection("127.0.0.1", 0, "ivr", "x")
    named: list[str] = []
    every: list[str] = []
    stop = conn.subscribe("hangup", lambda e: named.append(e["Uniqueid"]))
    conn._dispatch(None, parse_message("Event: Hangup\r\nUniqueid: 1"))
    conn.subscribe("*", lambda e: every.append(e["Uniqueid"]))
    conn._dispatch(None, parse_message("Event: Hangup\r\nUniqueid: 2"))
    stop()
    conn._dispatch(None, parse_message("Event: Hangup\r\nUniqueid: 3"))
    conn._dispatch(None, Message({"Event": "HANGUP", "Uniqueid": "4"}))
    assert named == ["1", "2"] and every == ["2", "3", "4"]
