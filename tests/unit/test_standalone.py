"""A controller without [cluster] on the PostgreSQL of a controller pair (issue 17), on a
real PostgreSQL: it refuses to start beside a pair of the same switch, with an error that
names the switch, the pair's nodes and the fix; while it runs it holds the switch's lease
itself, so a pair's node refuses to start beside it; `ivr doctor` says the same. A database
that cannot be asked never stops a start."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from ivr.cluster import Lease, Standalone, SwitchTaken, check_start, standalone_name
from ivr.config import load_config
from ivr.controller import Controller
from ivr.doctor import _Doctor
from ivr.http.forward import NODES_SCHEMA
from tests import REPO
from tests.fakes import until
from tests.unit import test_cluster

FAST, pg = test_cluster.FAST, test_cluster.pg  # the lease timings; the PostgreSQL fixture
ENV = {"IVR_HTTP_TOKEN": "t" * 32, "IVR_AMI_SECRET": "x"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_file(tmp_path: Path, url: str, switch: str, node: str = "", connect_timeout: float = 5.0) -> Path:
    path = tmp_path / f"ivr-{node or 'alone'}.toml"
    cluster = f'[cluster]\nswitch = "{switch}"\n' + (f'node = "{node}"\n' if node else "")
    path.write_text(f'[database]\nurl = "{url}"\ntimeout = 2.0\nconnect_timeout = {connect_timeout}\n'
                    f'spool_dir = "{tmp_path / "spool"}"\n\n'
                    f'[agi]\nport = {_free_port()}\n\n[ami]\nport = {_free_port()}\n\n'
                    f'[http]\nport = {_free_port()}\n\n{cluster}')
    return path


@pytest.fixture
async def pair(pg: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Lease]]:
    """A pair's leader (a1) of its own switch, and its two registered nodes."""
    switch = "alone-" + request.node.name[5:40]
    lease = Lease(pg, node="a1", switch=switch, **FAST)
    await lease.start()
    await lease.wait_role("leader", 5)
    conn = await asyncpg.connect(pg)
    await conn.execute(NODES_SCHEMA)
    await conn.executemany("INSERT INTO ivr_nodes VALUES ($1, $2, $3, now()) ON CONFLICT DO NOTHING",
                           [(switch, n, f"http://127.0.0.1:{p}") for n, p in (("a1", 1), ("a2", 2))])
    await conn.close()
    yield switch, lease
    await lease.close()


async def _lease_row(pg: str, switch: str) -> Any:
    conn = await asyncpg.connect(pg)
    try:
        return await conn.fetchrow("SELECT node, token, expires_at > now() AS live FROM ivr_lease WHERE switch = $1",
                                   switch)
    finally:
        await conn.close()


async def test_a_controller_without_cluster_refuses_to_start_beside_a_pair(
        pg: str, pair: tuple[str, Lease], tmp_path: Path) -> None:
    switch, lease = pair
    ctl = Controller(load_config(_config_file(tmp_path, pg, switch), env=ENV))
    with pytest.raises(SwitchTaken) as caught:
        await ctl.start()
    message = str(caught.value)
    assert f"switch {switch!r} is driven by a controller pair" in message
    assert "node 'a1' holds its lease (its nodes: a1, a2)" in message
    assert "no [cluster] section" in message and 'node = "<name>"' in message
    assert not ctl.agi.listening  # nothing started: no call reaches it
    row = await _lease_row(pg, switch)
    assert (row["node"], row["token"], row["live"]) == ("a1", lease.token, True)  # the pair undisturbed
    assert lease.may_act()


async def test_a_pair_whose_lease_just_expired_is_still_a_pair(pg: str, pair: tuple[str, Lease]) -> None:
    """Both nodes restarting, or a takeover under way: the lease expired seconds ago."""
    switch, lease = pair
    await lease.close()
    conn = await asyncpg.connect(pg)
    await conn.execute("UPDATE ivr_lease SET expires_at = now() - interval '30 seconds' WHERE switch = $1", switch)
    await conn.close()
    with pytest.raises(SwitchTaken, match=r"node 'a1' held its lease 30 s ago"):
        await check_start(pg, switch, standalone_name(), timeout=2)


async def test_once_the_pair_is_long_gone_it_runs_and_holds_the_switch_so_a_pair_node_refuses(
        pg: str, pair: tuple[str, Lease], tmp_path: Path) -> None:
    switch, lease = pair
    await lease.close()
    conn = await asyncpg.connect(pg)
    await conn.execute("UPDATE ivr_lease SET expires_at = now() - interval '1 hour' WHERE switch = $1", switch)
    await conn.close()
    ctl = Controller(load_config(_config_file(tmp_path, pg, switch), env=ENV))
    await ctl.start()
    try:
        assert ctl.standalone is not None
        await ctl.standalone.lease.wait_role("leader", 5)
        row = await _lease_row(pg, switch)
        assert row["node"] == standalone_name() and row["live"]
        # A node of the pair started now: refused, naming this host.
        node = Controller(load_config(_config_file(tmp_path, pg, switch, node="a1"), env=ENV))
        with pytest.raises(SwitchTaken, match=rf"driven by a controller without \[cluster\] on host "
                                              rf"'{socket.gethostname()}'"):
            await node.start()
        assert not node.agi.listening and node.lease is not None and not node.lease.may_act()
        assert ctl.operations.services.status["standalone"]()["holds_lease"] is True
    finally:
        await ctl.stop()
    # Stopped: the switch is handed back at once; the pair may start.
    row = await _lease_row(pg, switch)
    assert row["node"] == standalone_name() and not row["live"]
    assert await check_start(pg, switch, "a1", timeout=2) is not None


async def test_the_same_host_restarting_it_is_not_a_conflict_another_host_is(pg: str) -> None:
    switch = "alone-restart"
    crashed = Standalone(pg, switch, **FAST)
    await crashed.start()
    await crashed.lease.wait_role("leader", 5)
    assert crashed.lease._task is not None
    crashed.lease._task.cancel()  # killed: its lease is still live
    assert await check_start(pg, switch, standalone_name(), timeout=2) is not None  # restarted here: fine
    with pytest.raises(SwitchTaken, match=r"another controller without \[cluster\] on host"):
        await check_start(pg, switch, standalone_name("other-host"), timeout=2)
    crashed.lease.valid_until = float("-inf")
    await crashed.close()


async def test_a_database_that_cannot_be_asked_never_stops_a_start() -> None:
    with capture_logs() as logs:
        assert await check_start("postgresql://ivr@/postgres?host=/nonexistent", "s", standalone_name(),
                                 timeout=0.5) is None
    assert [e["event"] for e in logs] == ["cluster.start_unchecked"]


async def test_ivr_doctor_says_so(pg: str, pair: tuple[str, Lease], tmp_path: Path) -> None:
    switch, _ = pair
    doctor = _Doctor(load_config(_config_file(tmp_path, pg, switch), env=ENV), timeout=2)
    await doctor._one_controller()
    [check] = doctor.checks
    assert not check.ok and check.name == "one controller per switch" and "controller pair" in check.detail
    doctor = _Doctor(load_config(_config_file(tmp_path, pg, switch, node="a2"), env=ENV), timeout=2)
    await doctor._one_controller()
    [check] = doctor.checks
    assert check.ok and "'a1'" in check.detail and "live" in check.detail


def test_ivr_run_exits_with_the_error(pg: str, tmp_path: Path) -> None:
    """The command an operator runs: exit status 2 and the error on stderr, at once."""
    switch = "alone-cli"

    async def lead() -> None:
        lease = Lease(pg, node="b1", switch=switch, ttl=600, renew_interval=1, poll_interval=1, margin=1)
        await lease.start()
        await lease.wait_role("leader", 5)
        assert lease._task is not None
        lease._task.cancel()  # killed: its lease stays live for 10 minutes
        await asyncio.gather(lease._task, return_exceptions=True)
        lease._conn.terminate()

    asyncio.run(lead())
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "ivr", "run", "-c", str(_config_file(tmp_path, pg, switch))],
                          check=False, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"ivr: error: switch {switch!r} is driven by a controller pair on this database: node 'b1'" in done.stderr


async def test_one_that_started_unchecked_beside_a_pair_says_so_once_it_cannot_hold_the_switch(
        pg: str, pair: tuple[str, Lease]) -> None:
    """The start was unchecked (the database could not be asked then): a few lease periods
    on, it does not hold the switch's lease, and says so as an error."""
    switch, lease = pair
    alone = Standalone(pg, switch, **{k: FAST[k] for k in ("ttl", "renew_interval", "poll_interval", "margin")})
    await alone.lease.start()  # as after cluster.start_unchecked
    try:
        await until(lambda: alone.lease._conn is not None, 5, "its first attempt on the database")
        with capture_logs() as logs:
            alone._not_holding()
        assert [e["event"] for e in logs] == ["cluster.standalone_not_holding"]
        assert alone.status()["lost"] == 1 and not alone.status()["holds_lease"] and lease.may_act()
    finally:
        await alone.close()


async def test_a_database_that_never_answers_delays_the_start_a_bounded_time(tmp_path: Path) -> None:
    """PostgreSQL accepting connections and never answering: the controller starts
    unchecked (FastAGI listening: calls are served) after at most the check's bound."""
    from ivr.cluster import START_CHECK_MAX

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # accepts (the kernel does) and never says a word
    try:
        url = f"postgresql://ivr@127.0.0.1:{hung.getsockname()[1]}/ivr"
        ctl = Controller(load_config(_config_file(tmp_path, url, "alone-hung", connect_timeout=3.0), env=ENV))
        with capture_logs() as logs:
            async with asyncio.timeout(START_CHECK_MAX + 5):  # a failure bound, not a measurement
                await ctl.start()
        try:
            assert ctl.agi.listening
            assert "cluster.start_unchecked" in [e["event"] for e in logs]
        finally:
            await ctl.stop()
    finally:
        hung.close()
