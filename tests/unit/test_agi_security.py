"""Issue 13 (2b, 3): the FastAGI environment stays intact whatever a caller's values hold,
the switch proves itself with its key on every session, and the server's bounds (pending
connections, sessions, one header deadline, idle replies) hold."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ivr.agi.channel import (
    CALLER_KEYS,
    AgiChannel,
    AgiError,
    AgiIdle,
    AgiRefused,
    FastAgiChannel,
    own_duration,
    parse_environment,
    read_headers,
)
from ivr.agi.server import AgiLimits, FastAgiServer
from ivr.agi.testing import environment, session, wire
from ivr.config import Config, SilenceConfig
from ivr.flows.inbound import InboundFlow
from ivr.greeting import Greeting
from ivr.metrics import Metrics
from tests.fakes import until

KEY = "Zk3-" + "q" * 28
FIELDS = ("callerid", "calleridname", "dnid", "rdnis")

# Lines an attacker would put in a caller value: forged keys of every part, the end of the
# environment, replies, AMI frames.
FORGED = st.sampled_from([
    "", "agi_network: yes", "agi_network_script: transfer-target", "agi_channel: PJSIP/agent-0001",
    "agi_uniqueid: 1.1", "agi_callerid: 1", "agi_calleridname: x", "agi_callingpres: 9",
    "agi_callingani2: 0", "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: 1", "agi_rdnis: 1",
    "agi_context: evil", "agi_extension: s", "agi_priority: 1", "agi_enhanced: 0.0",
    "agi_accountcode: ", "agi_threadid: 1", "agi_arg_1: evil", "agi_arg_2: x",
    "200 result=1 (ivrsync-0)", "HANGUP", "Action: UserEvent", "UserEvent: Injected",
])
VALUE = st.lists(st.one_of(FORGED, st.text(alphabet=st.characters(exclude_characters="\n",
                                                                  exclude_categories=["Cs"]),
                                           max_size=12)), max_size=8).map("\n".join)
ARG = st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=12)


def lines_of(env: dict[str, str]) -> list[str]:
    return wire(env).decode().split("\n")[:-2]  # without the closing empty line


def trusted(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in CALLER_KEYS}


@settings(max_examples=400, deadline=None)
@given(values=st.fixed_dictionaries(dict.fromkeys(FIELDS, VALUE)), args=st.lists(ARG, max_size=3))
@example(values={"callerid": "13800\n\nagi_context: evil\nagi_extension: s\nagi_priority: 1\n"
                             "agi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1\n\nAction: UserEvent",
                 "calleridname": "", "dnid": "", "rdnis": ""}, args=[])
def test_environment_intact_whatever_the_caller_values(values, args):
    real = environment("transfer-target", args=tuple(args), **values)
    parsed = parse_environment(lines_of(real))
    assert trusted(parsed) == trusted(real)
    if not any("\n" in v for v in values.values()):
        assert parsed == real  # no line break: every value exactly as sent


@settings(max_examples=100, deadline=None)
@given(values=st.fixed_dictionaries(dict.fromkeys(FIELDS, VALUE)))
def test_reader_finds_the_true_end_with_the_sync_probe(values):
    """Through the socket reader: whatever blank lines and forged ends the caller values
    hold, the environment ends where Asterisk's reply to the probe begins."""
    real = environment("inbound", KEY, **values)

    async def run() -> dict[str, str]:
        server_side: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

        async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server_side.set_result(await read_headers(reader, writer, key=KEY, require_key=True))
            writer.close()

        srv = await asyncio.start_server(on, "127.0.0.1", 0)
        try:
            async with asyncio.timeout(5):
                await session(srv.sockets[0].getsockname()[1], real)
                return await server_side
        finally:
            srv.close()

    parsed = asyncio.run(run())
    assert trusted(parsed) == trusted({**real, "agi_network_script": "inbound",
                                       "agi_request": "agi://127.0.0.1:4573/inbound"})


def test_key_never_left_in_the_environment():
    parsed = parse_environment(lines_of(environment("inbound", KEY)))
    assert KEY in parsed["agi_network_script"]  # the parser alone keeps it; read_headers strips it


async def never_run(call: AgiChannel) -> None:
    """A route these tests expect the server never to reach (a refused session)."""


async def serve(routes, **kwargs) -> FastAgiServer:
    server = FastAgiServer(routes, "127.0.0.1", 0, **kwargs)
    await server.start()
    return server


async def test_hostile_callerid_goes_through_the_inbound_route_normally():
    """The issue's caller: a number with CR/LF, a blank line and an AMI-looking payload
    (it ended the environment early and the session failed). Now: the greeting runs."""
    config = Config(silence=SilenceConfig(pause=0.2))
    hello = Greeting(holiday=None, daypart="day", text="", prompts=["hello"], language="zh-CN")
    flow = InboundFlow(config, lambda: datetime(2027, 3, 10, 15, 0), choose_greeting=lambda _a, _c: hello)
    seen: list[AgiChannel] = []

    async def inbound(call: AgiChannel) -> None:
        seen.append(call)
        await flow(call)

    server = await serve({"inbound": inbound}, key=KEY)
    evil = "13800\r\n\r\nAction: UserEvent\r\nUserEvent: Injected\r\n\nagi_channel: PJSIP/agent-1\nagi_threadid: 1\n"
    env = environment("inbound", KEY, callerid=evil, calleridname="x\n\n", uniqueid="1796115316.7")
    replies = lambda c: "200 result=49" if c.startswith("WAIT FOR DIGIT") else "200 result=0"
    try:
        with capture_logs() as logs:
            commands = await asyncio.wait_for(session(server.port, env, replies), 10)
    finally:
        await server.close()
    [call] = seen
    assert call.uniqueid == "1796115316.7" and call.channel == "PJSIP/anonymous-00000001"
    assert isinstance(call, FastAgiChannel) and call.script == "inbound" and KEY not in str(call.headers)
    assert commands[1] == "ANSWER"
    assert any(c.startswith("SET VARIABLE IVR_RESULT") for c in commands)
    assert not [e for e in logs if e["event"] in ("fastagi.agi_error", "fastagi.refused", "fastagi.handler_failed")]
    assert KEY not in str(logs)


@pytest.mark.parametrize(("env", "reason"), [
    (environment("inbound"), "bad key"),
    (environment("inbound", "wrong-" + "x" * 26), "bad key"),
    (environment("inbound", KEY[:-1]), "bad key"),
    (environment("inbound?ivr_key="), "bad key"),
])
async def test_session_without_the_key_is_refused_before_any_command(env, reason):
    metrics = Metrics()
    ran: list[str] = []

    async def inbound(call: AgiChannel) -> None:
        ran.append(call.uniqueid)

    server = await serve({"inbound": inbound}, key=KEY, metrics=metrics)
    try:
        with capture_logs() as logs:
            commands = await asyncio.wait_for(session(server.port, env), 5)
    finally:
        await server.close()
    assert commands == [] and ran == []  # nothing written to the impostor; closed
    assert server.refused == {reason: 1}
    assert metrics.value("ivr_agi_refused_total", {"reason": reason}) == 1
    [line] = [e for e in logs if e["event"] == "fastagi.refused"]
    assert line["reason"] == reason and KEY not in str(logs)


async def test_no_key_configured_refuses_everything_with_a_clear_error():
    with capture_logs() as logs:
        server = await serve({"inbound": never_run})
        try:
            commands = await asyncio.wait_for(session(server.port, environment("inbound", KEY)), 5)
        finally:
            await server.close()
    assert commands == [] and server.refused == {"no key configured": 1}
    [error] = [e for e in logs if e["event"] == "fastagi.no_key"]
    assert "IVR_AGI_KEY" in error["fix"] and error["log_level"] == "error"


async def test_key_not_required_is_an_explicit_choice():
    ran: list[str] = []

    async def inbound(call: AgiChannel) -> None:
        ran.append(call.uniqueid)

    server = await serve({"inbound": inbound}, require_key=False)
    try:
        await asyncio.wait_for(session(server.port, environment("inbound")), 5)
    finally:
        await server.close()
    assert ran == ["1796115316.0"]


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"agi_network: yes\nagi_network_script: inbound?ivr_key=" + KEY.encode() + b"\nagi_channel: x\n\n",
    b"\x00\xff" * 10 + b"\n\n",
])
async def test_malformed_header_is_refused(data):
    server = await serve({"inbound": never_run}, key=KEY)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing written
        writer.close()
    finally:
        await server.close()
    assert server.refused == {"bad header": 1}


async def test_one_deadline_for_the_whole_header_slowloris():
    """A byte every 50 ms never lets a per-line timeout fire; the header deadline does."""
    server = await serve({}, key=KEY, limits=AgiLimits(header_timeout=0.5))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(5):
            for byte in wire(environment("inbound", KEY)):
                writer.write(bytes([byte]))
                await writer.drain()
                if reader.at_eof():
                    break
                try:
                    async with asyncio.timeout(0.05):
                        if await reader.read(1) == b"":
                            break
                except TimeoutError:
                    pass
        elapsed = loop.time() - start
    finally:
        writer.close()
        await server.close()
    assert 0.45 <= elapsed < 1.5
    assert server.refused == {"bad header": 1}


async def test_idle_connections_are_evicted_so_the_switch_gets_in():
    ran: list[str] = []

    async def inbound(call: AgiChannel) -> None:
        ran.append(call.uniqueid)
        await call.answer()

    server = await serve({"inbound": inbound}, key=KEY, limits=AgiLimits(max_pending=4, header_timeout=30))
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
    try:
        commands = await asyncio.wait_for(session(server.port, environment("inbound", KEY)), 2)
        assert commands[1:] == ["ANSWER"] and ran == ["1796115316.0"]
        assert server.refused == {"evicted": 17}  # 21 connections, 4 pending slots: each counted once
        # the evicted ones were closed by the server
        closed = 0
        for reader, _writer in idle[:16]:
            closed += await asyncio.wait_for(reader.read(), 2) == b""
        assert closed == 16
    finally:
        for _r, w in idle:
            w.close()
        await server.close()


async def test_sessions_are_capped():
    release = asyncio.Event()
    started = 0

    async def inbound(call: AgiChannel) -> None:
        nonlocal started
        started += 1
        await release.wait()

    server = await serve({"inbound": inbound}, key=KEY, limits=AgiLimits(max_sessions=2))
    try:
        calls = [asyncio.ensure_future(session(server.port, environment("inbound", KEY))) for _ in range(2)]
        await until(lambda: started == 2, 2, "both sessions running")
        third = await asyncio.wait_for(session(server.port, environment("inbound", KEY)), 2)
        assert len(third) == 1 and server.refused == {"busy": 1}  # only the sync probe, then closed
        release.set()
        await asyncio.wait_for(asyncio.gather(*calls), 2)
    finally:
        release.set()
        await server.close()


async def test_idle_session_is_dropped_but_a_long_wait_for_digit_is_not():
    async def inbound(call: AgiChannel) -> None:
        # its own 3 s + idle 0.3 s: the reply at 0.9 s (3 idle timeouts) is in time, with 2.4 s to
        # spare for a loaded machine (with 1 s, a 0.4-s stall of the test's sleep dropped it)
        await call.wait_for_digit(3000)
        with pytest.raises(AgiIdle):
            await call.answer()  # no reply at all: dropped after 0.3 s

    results: list[BaseException | None] = []

    async def guarded(call: AgiChannel) -> None:
        try:
            await inbound(call)
            results.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    server = await serve({"inbound": guarded}, key=KEY, limits=AgiLimits(idle_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(wire(environment("inbound", KEY)))
        probe = (await reader.readline()).decode().split()[-1]
        writer.write(f"200 result=1 ({probe})\n".encode())
        assert (await reader.readline()).startswith(b"WAIT FOR DIGIT 3000")
        await asyncio.sleep(0.9)  # pacing: the switch waiting for a digit (simulated): 3 idle timeouts
        writer.write(b"200 result=0\n")
        assert await reader.readline() == b"ANSWER\n"
        assert await asyncio.wait_for(reader.read(), 2) == b""  # then closed for idleness
    finally:
        writer.close()
        await server.close()
    assert results == [None]


def test_own_durations():
    assert own_duration("WAIT FOR DIGIT 5000") == 5.0
    assert own_duration("WAIT FOR DIGIT -1") == 3600.0
    assert own_duration('STREAM FILE ivr/x ""') == 300.0
    assert own_duration("ANSWER") == 0.0


async def test_read_headers_refuses_before_reading_further():
    reader = asyncio.StreamReader()
    reader.feed_data(wire(environment("inbound")))  # no key
    with pytest.raises(AgiRefused, match="missing FastAGI key"):
        await read_headers(reader, None, key=KEY, require_key=True)
    with pytest.raises(AgiError):
        await read_headers(asyncio.StreamReader(), None, timeout=0.05)
