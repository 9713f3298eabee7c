"""The operations surface when the records database is down at start: the controller's
``/healthz`` says so (with the error) and turns healthy by itself once it can be opened."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from ivr.ami.connection import Backoff
from ivr.config import load_config
from ivr.http.operations import Operations, ring_period
from ivr.sections import Config, RingsConfig, SwitchConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_healthz_reports_the_database_down_then_up(tmp_path: Path) -> None:
    from ivr.controller import Controller

    blocker = tmp_path / "var"
    blocker.write_text("a file where the database directory must be")
    path = tmp_path / "ivr.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{blocker / "ivr.db"}"\nspool_dir = "{tmp_path / "spool"}"\n\n'
                    f'[http]\nport = {_free_port()}\n')
    ctl = Controller(load_config(path, env={"IVR_HTTP_TOKEN": "t" * 32}))
    auth = {"Authorization": "Bearer " + "t" * 32}
    ops: Operations = ctl.operations
    ops.records.backoff = Backoff(initial=0.05, maximum=0.1)
    await ops.start()  # only the operations surface: no switch in a unit test
    try:
        async with aiohttp.ClientSession() as http:
            async def database() -> dict:
                async with http.get(f"{ops.http.url}/healthz") as resp:
                    return (await resp.json())["checks"]["database"]

            down = await database()
            assert down["ok"] is False and "unavailable (retrying" in down["error"]
            ctl.bus.emit("call.arrived", "0.0")  # during the outage: to the spool, counted there
            await ops.records.recorder.wait_state("down", 5)
            async with http.get(f"{ops.http.url}/healthz") as resp:
                assert resp.status == 503
                records = (await resp.json())["records"]
            assert records["state"] == "down" and records["dropped"] == 0 and "error" in records
            async with http.get(f"{ops.http.url}/metrics") as resp:
                assert "ivr_records_spooled" in await resp.text()
            async with http.get(f"{ops.http.url}/api/calls", headers=auth) as resp:
                assert resp.status == 503 and (await resp.json())["error_id"] == "records-unavailable"
            blocker.unlink()
            await ops.records.wait_open(5)
            assert (await database()) == {"ok": True}
            ctl.bus.emit("call.arrived", "1.0")
            await ops.records.recorder.wait_applied(2)  # the spooled one first
            async with http.get(f"{ops.http.url}/healthz") as resp:
                records = (await resp.json())["records"]
            assert (records["state"], records["spooled"], records["dropped"]) == ("up", 0, 0)
            assert ops.services.store is not None and await ops.services.store.call("1.0") is not None
            assert await ops.services.store.call("0.0") is not None
    finally:
        await ops.stop()


def test_the_dashboard_rings_are_the_ring_monitors() -> None:
    """The dashboard's ring period and thresholds come from [rings] and the tone zone."""
    config = Config(switch=SwitchConfig(tone_zone="us"), rings=RingsConfig(warn_rings=2, critical_rings=4))
    assert ring_period(config) == (6.0, 2, 4)
