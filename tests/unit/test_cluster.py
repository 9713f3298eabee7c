"""The controller pair's lease on a real PostgreSQL: one leader, fencing tokens that only
grow, a leader that cannot renew stops acting before the lease can be taken, takeover
time, and the one gate for AMI actions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ivr.ami.connection import READ_ACTIONS, AmiConnection, AmiNotLeader
from ivr.cluster import Lease
from tests.fakes import until
from tests.pgserver import postgres_server

FAST: dict[str, Any] = {"ttl": 0.8, "renew_interval": 0.15, "poll_interval": 0.1, "margin": 0.2}


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@contextlib.asynccontextmanager
async def three(pg: str, request: pytest.FixtureRequest, timing: dict[str, Any]) -> AsyncIterator[list[Lease]]:
    """Nodes a, b and c on one switch (the test's own) with ``timing``; closed afterwards."""
    switch = request.node.name[:60].replace("[", "-").replace("]", "")
    leases = [Lease(pg, node=n, switch=switch, **timing) for n in ("a", "b", "c")]
    try:
        yield leases
    finally:
        for lease in leases:
            await lease.close()


@pytest.fixture
async def nodes(pg: str, request: pytest.FixtureRequest) -> AsyncIterator[list[Lease]]:
    async with three(pg, request, FAST) as leases:
        yield leases



async def test_exactly_one_leader_and_it_stays(nodes: list[Lease]) -> None:
    for lease in nodes:
        await lease.start()
    await until(lambda: any(x.may_act() for x in nodes), 5, "a leader")
    first = next(x for x in nodes if x.may_act())
    # Several lease periods: renewals keep the same leader, same token, never two.
    end = time.monotonic() + 3 * FAST["ttl"]
    while time.monotonic() < end:
        assert [x.node for x in nodes if x.may_act()] == [first.node]
        await asyncio.sleep(0.02)  # poll: sampled every 20 ms over the window
    assert first.token >= 1 and first.takeovers == 1
    assert {x.role for x in nodes} == {"leader", "standby"}


async def test_a_stopped_leader_hands_over_at_once_with_a_higher_token(
        pg: str, request: pytest.FixtureRequest) -> None:
    """A lease of 5 s here: waited out, b could not lead before 4.85 s after a's close
    (ttl - renew_interval); handed back, b takes it at its next poll (0.1 s). The bound
    (2 s) is far from both, so a loaded machine moves neither across it (with the 0.8-s
    lease the two were 0.3 s apart)."""
    async with three(pg, request, {**FAST, "ttl": 5.0}) as (a, b, _):
        await a.start()
        await a.wait_role("leader", 5)
        await b.start()
        token = a.token
        t0 = time.monotonic()
        await a.close()
        await b.wait_role("leader", 5)
        assert time.monotonic() - t0 < 2.0  # released, not waited out
        assert b.token == token + 1


async def test_a_leader_cut_from_the_database_stops_acting_before_the_lease_can_be_taken(
        nodes: list[Lease]) -> None:
    """The timing argument: the cut leader's may_act() turns False at least `margin` s
    before the standby may take the lease; the two never overlap. Both moments are the
    leases' own: a stops acting at its ``valid_until`` (may_act() is that clock
    comparison), b starts when it sets its own (its role callback runs right then, no
    await between); the test's sampling, which a busy loop stalls, times nothing."""
    a, b, _ = nodes
    await a.start()
    await a.wait_role("leader", 5)
    await b.start()
    took: list[tuple[float, float, bool]] = []  # (b's clock, a's deadline, a may act), at b's takeover

    def on_b(role: str, _token: int) -> None:
        if role == "leader":
            took.append((b.clock(), a.valid_until, a.may_act()))

    b.on_change(on_b)
    # Cut a off the database: its socket dies, every reconnect fails (so its deadline stays).
    a.url = "postgresql://ivr@/postgres?host=/nonexistent"
    a._conn.terminate()
    end = time.monotonic() + 5
    while time.monotonic() < end and not took:
        assert not (a.may_act() and b.may_act()), "two leaders at once"
        await asyncio.sleep(0.005)  # poll: sampled every 5 ms (a check that can only miss), bounded by end
    assert took, "b never took the lease"
    b_started, a_stopped, a_acting = took[0]
    assert not a_acting, "two leaders at once"
    # 1 ms: PostgreSQL's now() (CLOCK_REALTIME) against the leases' CLOCK_BOOTTIME, which NTP may slew
    print(f"b took the lease {b_started - a_stopped:.3f} s after a stopped acting")
    assert b_started - a_stopped >= FAST["margin"] - 0.001, (b_started - a_stopped, a_stopped)
    assert b.token == a.token + 1


async def test_takeover_after_a_dead_leader_within_ttl_plus_poll(pg: str, nodes: list[Lease]) -> None:
    """A leader that vanishes without a word (its task killed, its connection dropped):
    the standby takes the lease within lease_ttl + poll_interval of the last renewal."""
    a, b, _ = nodes
    await a.start()
    await a.wait_role("leader", 5)
    await b.start()
    renewed = a.valid_until
    await until(lambda: a.valid_until > renewed, 5, "a renewed its lease since b started")
    assert a._task is not None
    a._task.cancel()
    died = time.monotonic()
    a._conn.terminate()
    a._conn = None
    a.valid_until = float("-inf")
    await b.wait_role("leader", 5)
    took = time.monotonic() - died
    assert took <= FAST["ttl"] + FAST["poll_interval"] + 0.3, took


async def test_tokens_only_grow_across_leaderships(nodes: list[Lease]) -> None:
    a, b, _ = nodes
    tokens = []
    for _ in range(3):
        for lease in (a, b):
            await lease.start()
            await lease.wait_role("leader", 5)
            tokens.append(lease.token)
            await lease.close()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


async def test_the_gate_refuses_changes_but_not_reads() -> None:
    conn = AmiConnection("127.0.0.1", 1, "u", "s")
    asked: list[str] = []

    def guard(action: dict[str, str]) -> bool:
        asked.append(action["Action"])
        return False

    conn.guard = guard

    class Proto:
        closed = False

    class Manager:
        protocol = Proto()

        def send_action(self, action: dict[str, str], as_list: bool | None = None) -> asyncio.Future[str | None]:
            fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    conn._manager = Manager()  # type: ignore[assignment]  # panoramisk's Manager, only what action() uses
    conn._up.set()
    for name in ("Redirect", "Originate", "Hangup", "Setvar", "UserEvent", "PlayDTMF"):
        with pytest.raises(AmiNotLeader):
            await conn.action({"Action": name, "Channel": "PJSIP/1-1"})
    for name in ("CoreShowChannels", "Status", "Getvar", "Ping"):
        assert name.lower() in READ_ACTIONS
        await conn.action({"Action": name})
    assert asked == ["Redirect", "Originate", "Hangup", "Setvar", "UserEvent", "PlayDTMF"]


def _config(tmp_path, text: str):
    from ivr.config import load_config

    path = tmp_path / "ivr.toml"
    path.write_text(text)
    return load_config(path, env={})


def test_cluster_config_defaults_and_a_valid_pair(tmp_path) -> None:
    c = _config(tmp_path, '[database]\nurl = "postgresql://ivr@db/ivr"\n[cluster]\nnode = "ivr-1"\n')
    assert (c.cluster.node, c.cluster.switch, c.cluster.lease_ttl) == ("ivr-1", "default", 1.2)
    assert _config(tmp_path, "").cluster.node == ""  # no [cluster]: always the leader


@pytest.mark.parametrize(("text", "where"), [
    ('[cluster]\nnode = "a"\n', "database.url"),  # SQLite cannot be shared by a pair
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a b"\n', "cluster.node"),
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\nswitch = "x;y"\n', "cluster.switch"),
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\nmargin = 1.2\n', "cluster.margin"),
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\nrenew_interval = 0.6\n',
     "cluster.renew_interval"),
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\npoll_interval = 2\n', "cluster.poll_interval"),
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\nlease_ttl = -1\n', "cluster.lease_ttl"),
    # a takeover longer than the switch's [ivr-agi] retries (2 s) would send calls to the fallback
    ('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\nlease_ttl = 1.5\npoll_interval = 0.2\n',
     "lease_ttl \\+ poll_interval must be at most 1.6"),
])
def test_cluster_config_is_checked(tmp_path, text: str, where: str) -> None:
    from ivr.errors import ConfigError

    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        _config(tmp_path, text)


def test_alarm_sinks_go_through_the_once_gate() -> None:
    from ivr.alarms.sinks import OnceSinks, sinks_from_config
    from ivr.once import Once
    from ivr.sections import AlarmsConfig

    assert [type(s) for s in sinks_from_config(AlarmsConfig(), None, Once())] == [OnceSinks]
    assert "OnceSinks" not in [type(s).__name__ for s in sinks_from_config(AlarmsConfig(), None)]
