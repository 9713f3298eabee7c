"""The controller's AMI link when the network path fails while Asterisk stays up (issue 9):
a freezable proxy on 127.0.0.1 sits between the controller and the real switch's AMI.

* half-open socket: nothing comes back, nothing is closed; the controller notices within
  ``ping_interval + ping_timeout`` s, ``/healthz`` says AMI down until the path works
  again, and then up;
* an Originate in flight at that moment ran once on the switch, raised
  :class:`AmiConnectionLost` in the controller, and was not sent again after the reconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from panoramisk.message import Message

from ivr.ami.connection import AmiConnection, AmiConnectionLost, Backoff
from tests.integration.amiproxy import AmiProxy
from tests.integration.amitools import until

pytestmark = pytest.mark.integration

PING_INTERVAL, PING_TIMEOUT = 1.0, 1.0


@pytest.fixture
async def proxy(switch) -> AsyncIterator[AmiProxy]:
    async with AmiProxy(switch.ami_host, switch.ami_port) as p:
        yield p


async def test_half_open_ami_is_detected_and_healthz_follows(controller_config, proxy):
    from ivr.controller import Controller

    config = controller_config()
    config = dataclasses.replace(config, ami=dataclasses.replace(
        config.ami, port=proxy.port, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
        connect_timeout=2.0, backoff_initial=0.2, backoff_max=1.0))
    ctl = Controller(config)
    await ctl.start()
    url = f"http://127.0.0.1:{ctl.operations.http.port}/healthz"
    try:
        async with aiohttp.ClientSession() as http:
            async def ami_ok() -> bool:
                async with http.get(url) as resp:
                    body = await resp.json()
                return bool(body["checks"]["ami"]["ok"])

            async def ami_down() -> bool:
                return not await ami_ok()

            await until(ami_ok, 10, "AMI up through the proxy")
            assert ctl.ami.connects == 1
            proxy.freeze()  # the socket stays open; nothing goes through, new ones too
            started = time.monotonic()
            await until(ami_down, PING_INTERVAL + PING_TIMEOUT + 1.5, "half-open socket detected")
            detected = time.monotonic() - started
            print(f"half-open AMI socket detected after {detected:.2f} s "
                  f"(ping_interval {PING_INTERVAL} s + ping_timeout {PING_TIMEOUT} s)")
            # While the path stays dead it stays down (reconnects stall at Login).
            await until(lambda: proxy.accepted >= 2, 5, "a reconnect attempt")
            assert not await ami_ok() and not ctl.ami.connected
            proxy.thaw()
            started = time.monotonic()
            await until(ami_ok, 10, "AMI up again after the path recovered")
            back = time.monotonic() - started
            print(f"AMI up again {back:.2f} s after the path recovered")
            assert ctl.ami.connects >= 2
            # The controller works on the new connection.
            assert (await ctl.ami.action({"Action": "Ping"})).get("Response") == "Success"
    finally:
        await ctl.stop()


async def test_an_action_in_flight_at_the_disconnect_is_never_run_twice(switch, ami, proxy):
    """An Originate reaches Asterisk but its reply never comes back: the controller gets
    AmiConnectionLost; after the reconnect the switch has run it exactly once."""
    if switch.embedded is None:
        pytest.skip("needs the embedded switch's controller secret")
    await ami.add_dialplan("test-once", "_X.", ["UserEvent(IvrOnce,Token: ${EXTEN})", "Hangup()"])
    conn = AmiConnection("127.0.0.1", proxy.port, "ivr", switch.embedded.secrets().controller,
                         ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                         backoff=Backoff(initial=0.2, maximum=1.0))
    await conn.start()
    try:
        await conn.wait_connected(10)
        since = len(ami.events)

        def once(token: str) -> Callable[[Message], bool]:
            return lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrOnce" and e.get("Token") == token

        proxy.freeze(upstream=False, new_connections=False)  # actions go in, replies never come back
        started = time.monotonic()
        first = asyncio.create_task(conn.action(
            {"Action": "Originate", "Channel": "Local/101@test-once", "Application": "Wait", "Data": "1",
             "Timeout": "5000"}, timeout=30))
        await ami.wait_for(once("101"), timeout=10, since=since)  # it ran on the switch
        with pytest.raises(AmiConnectionLost, match="may or may not have run"):
            await first
        lost_after = time.monotonic() - started
        assert lost_after < PING_INTERVAL + PING_TIMEOUT + 1.5
        await until(lambda: conn.connected and conn.connects == 2, 10, "reconnected")
        # AMI runs a connection's actions in order: once the marker has run, a re-sent
        # Originate would have run before it.
        await conn.action({"Action": "Originate", "Channel": "Local/102@test-once", "Application": "Wait",
                           "Data": "1", "Async": "true"})
        await ami.wait_for(once("102"), timeout=10, since=since)
        assert len(ami.find(once("101"), since)) == 1
        print(f"in-flight Originate failed with AmiConnectionLost after {lost_after:.2f} s; run once")
    finally:
        await conn.close()
