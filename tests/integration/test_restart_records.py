"""Asterisk restarts mid-call (issue 9): the call's hang-up falls in the outage, yet its
record is closed once the controller has reconnected and resynced; a call after the
restart is recorded as usual.

Measured here: a plain ``core stop now`` sends each channel's ``Hangup`` before AMI
closes, so the controller sees those hang-ups and records them normally. The hang-up is
lost when the AMI path is already dead as Asterisk goes down (a crash, a network cut):
the controller's AMI goes through a freezable proxy, frozen just before the restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from tests.integration.amiproxy import AmiProxy
from tests.integration.amitools import AmiRecorder, until

pytestmark = pytest.mark.integration


async def admin(switch) -> AmiRecorder:
    return await AmiRecorder(switch.ami_host, switch.ami_port, switch.username, switch.secret).connect()


async def place_call(ami: AmiRecorder, steps: list[str], exten: str) -> str:
    """A Local caller (its ;2 half runs ``steps``) into ivr-inbound, once the controller
    greets it; returns the call id (the ;1 channel's Linkedid)."""
    await ami.add_dialplan("test-caller", exten, steps)
    since = len(ami.events)
    await ami.originate(f"Local/{exten}@test-caller", "ivr-inbound", "s")
    new = (await ami.wait_for(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith(
        f"Local/{exten}@test-caller") and e.get("Channel", "").endswith(";1"), timeout=10, since=since))[0]
    await ami.wait_for(lambda e: e.event == "AGIExecStart" and "STREAM FILE" in e.get("Command", ""),
                       timeout=10, since=since)
    return str(new["Linkedid"])


async def test_calls_that_ended_while_asterisk_restarted_are_closed(switch, controller_config):
    if switch.embedded is None:
        pytest.skip("restarting Asterisk needs the embedded switch")
    from ivr.controller import Controller

    async with AmiProxy(switch.ami_host, switch.ami_port) as proxy:
        config = controller_config()
        config = dataclasses.replace(config, ami=dataclasses.replace(
            config.ami, port=proxy.port, ping_interval=1.0, ping_timeout=1.0, backoff_initial=0.2,
            backoff_max=1.0))
        ctl = Controller(config)
        await ctl.start()
        try:
            await restart_mid_call(switch, ctl, proxy)
        finally:
            await ctl.stop()


async def restart_mid_call(switch, ctl, proxy: AmiProxy) -> None:
    store = await ctl.operations.records.wait_open(5)
    await ctl.ami.wait_connected(10)
    ami = await admin(switch)
    try:
        call_id = await place_call(ami, ["Answer()", "Wait(60)", "Hangup()"], "outage")
        await until(lambda: store.call(call_id), 5, "the call's record")
    finally:
        ami.close()
    started = time.monotonic()
    proxy.freeze(upstream=False, new_connections=False)  # the hang-up events will be lost
    await asyncio.to_thread(switch.embedded.down)  # the call dies with the switch
    await asyncio.to_thread(switch.embedded.up)
    await until(lambda: ctl.ami.connects == 2 and ctl.channels.resyncs == 2, 20, "reconnect and resync")
    record = await until(lambda: _ended(store, call_id), 5, "the record closed after the resync")
    assert not ctl.operations.hangups.calls
    print(f"record closed {time.monotonic() - started:.2f} s after the restart began")
    assert record["hung_up_first"] == "unknown" and record["ended_at"] is not None
    ended = [e for e in record["events"] if e["kind"] == "call.ended"]
    assert [e["data"].get("reason") for e in ended] == ["ended-while-disconnected"]
    assert call_id not in await store.open_calls()

    # A call after the restart is recorded as usual: its hang-up is seen, the caller's.
    ami = await admin(switch)
    try:
        again = await place_call(ami, ["Answer()", "Wait(2)", "Hangup()"], "after")
        record = await until(lambda: _ended(store, again), 15, "the new call's record closed")
        assert record["hung_up_first"] == "caller"
        assert [e["data"].get("reason") for e in record["events"] if e["kind"] == "call.ended"] == [None]
        assert "call.arrived" in {e["kind"] for e in record["events"]}
    finally:
        ami.close()


async def _ended(store, call_id: str) -> dict[str, Any] | None:
    record = await store.call(call_id)
    return record if record is not None and record["state"] == "ended" else None
