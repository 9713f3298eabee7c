"""The FastAGI reader and command channel: replies, hang-ups, and malformed input."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ivr.agi.channel import AgiChannel, AgiError, AgiHangup, AgiReply, FastAgiChannel, parse_reply, read_headers
from ivr.agi.server import FastAgiServer
from ivr.agi.testing import environment, play_switch, wire
from tests.properties import examples

KEY = "k" * 32
HEADERS = wire(environment("inbound", KEY, uniqueid="1700000000.1"))


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


class FakeWriter:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, _name: str) -> None:
        return None


async def test_headers_parsed():
    headers = await read_headers(reader_of(HEADERS))
    assert headers["agi_network_script"] == "inbound"
    assert headers["agi_uniqueid"] == "1700000000.1"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "closed before the AGI headers ended"),
    (b"agi_network: yes\n", "closed before the AGI headers ended"),
    (b"\n", "empty AGI request"),
    (b"GET / HTTP/1.1\n\n", "malformed AGI header line"),
    (b"agi_network: yes\nagi_request: x\nagi_x: " + b"a" * 20000 + b"\n\n", "longer than"),
])
async def test_bad_headers_are_named(data, message):
    with pytest.raises(AgiError, match=message):
        await read_headers(reader_of(data))


@pytest.mark.parametrize(("line", "digit"), [
    ("200 result=0 endpos=7352", None),
    ("200 result=49 endpos=100", "1"),
    ("200 result=35", "#"),
])
def test_replies(line, digit):
    assert parse_reply(line).digit == digit


@pytest.mark.parametrize("line", ["HANGUP", "511 Command Not Permitted on a dead channel",
                                  "200 result=-1", "200 result=0 (hangup)"])
def test_hangup_replies(line):
    with pytest.raises(AgiHangup):
        parse_reply(line)


@pytest.mark.parametrize("line", ["510 Invalid or unknown command", "", "garbage", "2", "\u00b9", "2\u00b900"])
def test_error_replies(line):
    with pytest.raises(AgiError):
        parse_reply(line)


@settings(max_examples=examples(100))
@given(st.text(max_size=200))
@example("¹00 result=0")  # found by hypothesis: '¹' is a digit to str.isdigit()
def test_parse_reply_fuzz(line):
    """Any line from the switch gives a reply, AgiHangup or AgiError: never anything else."""
    try:
        reply: AgiReply | None = parse_reply(line)
        problem = ""
    except (AgiHangup, AgiError) as exc:
        reply, problem = None, str(exc)
    assert (reply is not None and isinstance(reply.code, int)) or problem, "a reply, or an error naming it"


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=400))
def test_read_headers_fuzz(data):
    """Any bytes: headers, or AgiError; never a hang (EOF ends it) nor another exception."""
    async def run():
        try:
            headers, problem = await asyncio.wait_for(read_headers(reader_of(data)), 2), ""
        except AgiError as exc:
            headers, problem = {}, str(exc)
        assert problem or all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    asyncio.run(run())


async def test_command_on_closed_stream_is_a_hangup():
    writer = FakeWriter()
    call = FastAgiChannel({}, reader_of(b""), writer)  # type: ignore[arg-type]  # FakeWriter for StreamWriter
    with pytest.raises(AgiHangup):
        await call.answer()
    assert call.hung_up
    with pytest.raises(AgiHangup):
        await call.answer()  # no more writes once hung up
    assert writer.sent == [b"ANSWER\n"]


async def test_multiline_usage_error_is_consumed():
    data = (b"520-Invalid command syntax.  Proper usage follows:\nUsage: STREAM FILE\n"
            b"520 End of proper usage.\n200 result=0\n")
    call = FastAgiChannel({}, reader_of(data), FakeWriter())  # type: ignore[arg-type]  # FakeWriter for StreamWriter
    with pytest.raises(AgiError, match="usage error"):
        await call.command("STREAM FILE")
    assert (await call.command("NOOP")).result == "0"


async def test_missing_prompt_is_an_error_not_a_hangup():
    data = b"200 result=-1 endpos=0\n200 result=6\n"
    call = FastAgiChannel({}, reader_of(data), FakeWriter())  # type: ignore[arg-type]  # FakeWriter for StreamWriter
    with pytest.raises(AgiError, match="could not play"):
        await call.stream_file("ivr/zh-CN/nope")
    assert not call.hung_up


async def test_command_refuses_newlines():
    call = FastAgiChannel({}, reader_of(b""), FakeWriter())  # type: ignore[arg-type]  # FakeWriter for StreamWriter
    with pytest.raises(AgiError, match="line break"):
        await call.command("EXEC Playback x\nHANGUP")


async def test_server_routes_and_tracks_calls():
    seen: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(call: AgiChannel) -> None:
        seen.append(call.uniqueid)
        started.set()
        await release.wait()

    server = FastAgiServer({"inbound": handler}, "127.0.0.1", 0, key=KEY)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    switch = asyncio.ensure_future(play_switch(reader, writer, environment("inbound", KEY, uniqueid="1700000000.1")))
    await asyncio.wait_for(started.wait(), 2)
    assert seen == ["1700000000.1"] and len(server.calls) == 1
    release.set()
    assert await server.wait_idle(2)
    commands = await asyncio.wait_for(switch, 2)  # ends when the server closed the socket
    assert len(commands) == 1 and commands[0].startswith("GET FULL VARIABLE ivrsync-")  # the sync probe only
    await server.close()


async def test_unknown_route_and_shutdown_leave_the_call_to_the_dialplan():
    server = FastAgiServer({}, "127.0.0.1", 0, key=KEY)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    commands = await asyncio.wait_for(play_switch(reader, writer, environment("inbound", KEY)), 2)
    assert [c.split()[:3] for c in commands] == [["GET", "FULL", "VARIABLE"]]  # closed, no call command
    await server.close()
    assert not server.listening
