"""AmiConnection against the in-memory AMI server: login, events, reconnect with backoff,
half-open detection, and no action ever sent twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from ivr.ami import AmiActionError, AmiConnection, AmiConnectionLost, AmiNotConnected
from ivr.ami.connection import Backoff
from ivr.ami.testing import FakeAmi

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.0)


@pytest.fixture
async def fake():
    async with FakeAmi(secret="s3cret") as ami:
        yield ami


@pytest.fixture
async def conn(fake):
    # A Pong missing 0.5 s is a dead link (found within 0.55 s, in the 2 s the tests wait): with
    # 0.05 s, one stall of this process on a loaded machine while a Ping was out reconnected
    # the link under a test that counts connects and logins.
    c = AmiConnection("127.0.0.1", fake.port, "ivr", "s3cret", ping_interval=0.05, ping_timeout=0.5,
                      backoff=FAST)
    yield c
    await c.close()


async def test_logs_in_and_delivers_events_by_name_and_wildcard(fake, conn):
    named: list[Any] = []
    every: list[Any] = []
    conn.subscribe("Newchannel", named.append)
    conn.subscribe("*", every.append)
    await conn.start()
    await conn.wait_connected(2)
    assert conn.connected and fake.logins == 1
    fake.event({"Event": "Newchannel", "Uniqueid": "1.1"})
    fake.event({"Event": "Hangup", "Uniqueid": "1.1"})
    reply = await conn.action({"Action": "Ping"}, 1)  # replies come after the events
    assert reply.get("Ping") == "Pong"
    assert [e["Uniqueid"] for e in named] == ["1.1"]
    assert [e.event for e in every] == ["Newchannel", "Hangup"]


async def test_error_reply_raises_ami_action_error(fake, conn):
    fake.handlers["redirect"] = lambda a: {"Response": "Error", "Message": "Channel specified does not exist"}
    await conn.start()
    with pytest.raises(AmiActionError, match="AMI Redirect failed: Channel specified does not exist"):
        await conn.action({"Action": "Redirect", "Channel": "PJSIP/1001-0000"}, 1)


async def test_event_list_reply(fake, conn):
    fake.channels = [{"Channel": "Local/a@b-0001;1", "Uniqueid": "1.1", "Linkedid": "1.1"}]
    await conn.start()
    reply = await conn.action({"Action": "CoreShowChannels"}, 1, as_list=True)
    assert [m.get("Event") for m in reply][-2:] == ["CoreShowChannel", "CoreShowChannelsComplete"]


async def test_refused_login_is_retried_and_reported(fake):
    c = AmiConnection("127.0.0.1", fake.port, "ivr", "wrong", backoff=FAST)
    await c.start()
    try:
        with pytest.raises(AmiNotConnected, match="login as 'ivr' refused"):
            await c.wait_connected(0.3)
        assert fake.count("Login") >= 2  # kept trying, with backoff
    finally:
        await c.close()


async def test_reconnects_and_logs_in_again_after_a_drop(fake, conn):
    resyncs = []
    conn.on_connected(lambda: resyncs.append(conn.connects))
    await conn.start()
    await conn.wait_connected(2)
    fake.drop()
    await fake.wait_for(lambda: fake.logins == 2, 2)
    await conn.wait_connected(2)
    assert resyncs == [1, 2]
    assert (await conn.action({"Action": "Ping"}, 1)).get("Ping") == "Pong"


async def test_half_open_socket_is_detected_by_missing_pong(fake, conn):
    await conn.start()
    await conn.wait_connected(2)
    fake.mute("Ping")  # the socket stays open but nothing answers
    await fake.wait_for(lambda: fake.logins == 2, 2)
    fake.unmute()
    await conn.wait_connected(2)
    assert conn.connects == 2


async def test_in_flight_originate_fails_and_is_never_sent_again(fake, conn):
    fake.mute("Originate")
    await conn.start()
    await conn.wait_connected(2)
    pending = asyncio.ensure_future(conn.action({"Action": "Originate", "Channel": "Local/1@x"}, 5))
    await fake.wait_for(lambda: fake.count("Originate") == 1, 2)
    fake.drop()
    with pytest.raises(AmiConnectionLost, match="not sent again and may or may not have run"):
        await pending
    await fake.wait_for(lambda: fake.logins == 2, 2)
    await conn.wait_connected(2)
    await conn.action({"Action": "Ping"}, 1)  # a round trip on the new connection
    assert fake.count("Originate") == 1


async def test_backoff_grows_and_is_capped():
    delays = Backoff(initial=0.5, factor=2, maximum=4, jitter=0).delays()
    assert [next(delays) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


async def test_action_without_connection_fails_clearly():
    c = AmiConnection("127.0.0.1", 9, "ivr", "x", backoff=FAST)  # port 9: nothing listens
    await c.start()
    try:
        with pytest.raises(AmiNotConnected, match=r"not connected within 0\.1 s"):
            await c.action({"Action": "Ping"}, 0.1)
    finally:
        await c.close()


async def pinging(fake: FakeAmi, busy_timeout: float) -> AmiConnection:
    """A connection pinging every 50 ms, dead after 0.25 s of silence or ``busy_timeout``.
    (0.1 s of silence was one stall of this process on a loaded machine: the in-process
    switch's events stall with it, and the link was taken for half-open.)"""
    c = AmiConnection("127.0.0.1", fake.port, "ivr", "s3cret", ping_interval=0.05, ping_timeout=0.25,
                      ping_busy_timeout=busy_timeout, backoff=FAST)
    await c.start()
    return c


class BusySwitch:
    """A switch too busy to answer Pings in time that still writes events every 20 ms;
    the Pongs it owes are sent by :meth:`pong`."""

    def __init__(self, fake: FakeAmi) -> None:
        self.fake = fake
        self.owed: list[str] = []
        fake.handlers["ping"] = self._owe
        self.task = asyncio.ensure_future(self._events())

    def _owe(self, action: dict[str, str]) -> list[Any]:
        self.owed.append(action["ActionID"])
        return []

    async def _events(self) -> None:
        n = 0
        while True:
            n += 1
            self.fake.event({"Event": "Newexten", "Uniqueid": f"9.{n}"}, learn=False)
            await asyncio.sleep(0.02)  # pacing: the switch's event rate

    def pong(self) -> None:
        for aid in self.owed:
            self.fake.event({"Response": "Success", "ActionID": aid, "Ping": "Pong"}, learn=False)
        self.owed.clear()

    def stop(self) -> None:
        self.task.cancel()


async def test_a_busy_switch_answering_late_is_not_taken_for_dead(fake):
    """Pongs 0.5 s late (2 x ping_timeout) while events keep coming: no reconnect, the
    late Pongs are counted."""
    c = await pinging(fake, busy_timeout=2.0)
    busy = BusySwitch(fake)
    try:
        await c.wait_connected(2)
        for _ in range(3):
            await fake.wait_for(lambda: bool(busy.owed), 2)
            await asyncio.sleep(0.5)  # pacing: the switch is this late
            busy.pong()
            await fake.wait_for(lambda: c.pings_late >= 1, 2)
        await fake.wait_for(lambda: c.pings_late >= 3, 2)
        assert fake.logins == 1 and c.connects == 1
    finally:
        busy.stop()
        await c.close()


async def test_a_switch_that_sends_but_never_answers_is_dropped_after_the_busy_timeout(fake):
    c = await pinging(fake, busy_timeout=0.6)
    busy = BusySwitch(fake)
    try:
        await c.wait_connected(2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with capture_logs() as logs:
            await fake.wait_for(lambda: fake.logins == 2, 3)
        assert loop.time() - started >= 0.6  # not at the first late window
        [why] = [e["reason"] for e in logs if e["event"] == "ami.reconnecting"]
        assert why == "no reply to Ping within 0.6 s although the switch still sends"
    finally:
        busy.stop()
        await c.close()


async def test_silence_is_still_found_within_ping_interval_plus_timeout(fake):
    """The half-open case with the busy tolerance on: nothing at all arrives, so the
    socket is dropped after one ping_timeout, not after ping_busy_timeout."""
    c = await pinging(fake, busy_timeout=30.0)
    try:
        await c.wait_connected(2)
        fake.mute("Ping")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fake.wait_for(lambda: fake.logins == 2, 2)
        assert loop.time() - started < 1.0
    finally:
        await c.close()
