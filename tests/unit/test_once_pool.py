"""The one-send claims on a pool of their own (ivr.once, [cluster] claim_connections), on a
real PostgreSQL: claims run side by side; a pool that is all taken, or a database that
does not answer, holds an action at most claim_timeout s, then it is sent and counted; the
fencing stays exact with many claims in flight from two nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import asyncpg
import pytest

from ivr.cluster import Lease
from ivr.once import Once, action_key
from ivr.sections import ClusterConfig, DatabaseConfig
from tests.fakes import drain, until
from tests.unit import test_cluster

FAST, pg = test_cluster.FAST, test_cluster.pg  # the lease timings; the PostgreSQL fixture

WAITING = """SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ivr-once'
             AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO ivr_action%'"""


@pytest.fixture
async def leader(pg: str, request: pytest.FixtureRequest) -> AsyncIterator[Lease]:
    lease = Lease(pg, node="a", switch="pool-" + request.node.name, **FAST)
    await lease.start()
    await lease.wait_role("leader", 5)
    yield lease
    await lease.close()


@pytest.fixture
async def admin(pg: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(pg)
    yield conn
    await conn.close()


async def _locked(admin: Any) -> Any:
    """A transaction holding ivr_action so that every claim waits in PostgreSQL."""
    tx = admin.transaction()
    await tx.start()
    await admin.execute("LOCK TABLE ivr_action IN ACCESS EXCLUSIVE MODE")
    return tx


@pytest.mark.parametrize("connections", [1, 4])
async def test_claims_are_in_flight_side_by_side_up_to_the_pool_size(
        pg: str, leader: Lease, admin: Any, connections: int) -> None:
    once = Once(leader, pg, connections=connections, claim_timeout=10.0)
    sent: list[int] = []
    assert await once.run("warm-up", lambda: None) == "sent"  # the pool and the table exist
    tx = await _locked(admin)
    runs = [asyncio.ensure_future(once.run(action_key(f"c{i}", "hold", 1), partial(sent.append, i)))
            for i in range(connections + 2)]
    async def in_flight() -> bool:
        return bool(await _waiting(admin) == connections and once.in_flight == connections)
    await until(in_flight, what=f"{connections} claims waiting in PostgreSQL at once")
    assert await _waiting(admin) == connections  # never more than the pool: the rest wait for it
    assert sent == []
    await tx.rollback()
    assert await asyncio.wait_for(asyncio.gather(*runs), 10) == ["sent"] * (connections + 2)
    assert sorted(sent) == list(range(connections + 2)) and once.claims()["in_flight"] == 0
    await once.close()


async def test_a_pool_all_taken_or_a_database_that_hangs_holds_an_action_at_most_the_bound(
        pg: str, leader: Lease, admin: Any) -> None:
    """Two connections, four due actions, the table locked: the two that got a connection
    wait for an answer (slow), the two others for a connection (busy); past claim_timeout
    each is sent anyway and counted; the pool then works again."""
    once = Once(leader, pg, connections=2, claim_timeout=0.3)
    sent: list[str] = []
    assert await once.run("warm-up", lambda: None) == "sent"
    tx = await _locked(admin)
    keys = [action_key(f"c{i}", "ring", "warning") for i in range(4)]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(once.run(k, partial(sent.append, k)) for k in keys)), 5)
    assert outcomes == ["unrecorded"] * 4 and sorted(sent) == keys  # never held up for good
    assert once.unrecorded_why == {"busy": 2, "slow": 2, "error": 0}
    assert once.counts["unrecorded"] == 4 and once.in_flight == 0
    await tx.rollback()
    # The two cut statements' connections come back once PostgreSQL acknowledged their
    # cancellation (in the background, a connection of its own each): the pool works again
    # from then on; claimed before that, the next claim raced those acknowledgements
    # against its own 0.3 s.
    await drain(once)
    assert await once.run(action_key("c9", "ring", "warning"), lambda: sent.append("after")) == "sent"
    assert sent[-1] == "after"
    await once.close()


async def test_a_claim_that_times_out_after_the_lease_was_lost_is_kept_not_sent(
        pg: str, leader: Lease, admin: Any) -> None:
    once, sent = Once(leader, pg, connections=1, claim_timeout=0.3), []
    assert await once.run("warm-up", lambda: None) == "sent"
    tx = await _locked(admin)
    run = asyncio.ensure_future(once.run(action_key("c1", "hold", 2), lambda: sent.append(1)))
    await until(lambda: _count(admin), what="the claim waiting in PostgreSQL")
    leader.valid_until = float("-inf")  # the lease ran out while the claim waited
    assert await asyncio.wait_for(run, 5) == "pending"
    assert sent == [] and once.pending == 1
    await tx.rollback()
    await once.close()


async def _count(admin: Any) -> bool:
    return bool(await _waiting(admin) >= 1)


async def _waiting(admin: Any) -> int:
    """Claims waiting in PostgreSQL (the statistics are read afresh: inside a transaction
    PostgreSQL keeps the first snapshot of pg_stat_activity)."""
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    return int(await admin.fetchval(WAITING))


async def test_many_claims_in_flight_from_a_stale_leader_all_fail(pg: str, admin: Any) -> None:
    """A node that believes it still leads with an old token (a paused process) claims
    nothing, however many claims it has in flight beside the real leader's."""
    a, b = (Lease(pg, node=n, switch="pool-stale", **FAST) for n in ("a", "b"))
    # Claims wait as long as they need here (a loaded machine): this is about fencing, not timeouts.
    oa, ob = Once(a, pg, connections=4, claim_timeout=10), Once(b, pg, connections=4, claim_timeout=10)
    try:
        await a.start()
        await a.wait_role("leader", 5)
        await b.start()
        stale = a.token
        await a.close()
        await b.wait_role("leader", 5)
        a.token, a.valid_until = stale, a.clock() + 30  # a wakes up believing in its lease
        sent: list[tuple[str, str]] = []
        keys = [action_key(f"c{i}", "hold", 1) for i in range(100)]
        outcomes = await asyncio.wait_for(asyncio.gather(
            *(oa.run(k, partial(sent.append, ("a", k))) for k in keys),
            *(ob.run(k, partial(sent.append, ("b", k))) for k in keys)), 30)
        # a's claims are fenced out: kept, or skipped where b's row was already there
        assert set(outcomes[:100]) <= {"pending", "skipped"} and outcomes[100:] == ["sent"] * 100
        assert sorted(sent) == sorted(("b", k) for k in keys)
        rows = await admin.fetch("SELECT node, token FROM ivr_action WHERE switch = 'pool-stale'")
        assert {(r["node"], r["token"]) for r in rows} == {("b", b.token)} and len(rows) == 100
        assert b.token == stale + 1
    finally:
        for x in (oa, ob):
            await x.close()
        await b.close()


async def test_a_handover_with_claims_in_flight_sends_each_action_exactly_once(pg: str, admin: Any) -> None:
    """Both nodes fire every action of a stream of calls (they follow the same events);
    the leader hands over half-way with claims in flight. Each action is sent once, by
    one node, under that node's own token."""
    a, b = (Lease(pg, node=n, switch="pool-handover", **FAST) for n in ("a", "b"))
    oa, ob = (Once(x, pg, connections=4, late_limit=30, claim_timeout=10) for x in (a, b))
    sent: list[tuple[str, str]] = []
    keys = [action_key(f"c{i}", "ring", "critical") for i in range(300)]
    try:
        await a.start()
        await a.wait_role("leader", 5)
        await b.start()
        first = a.token
        assert await oa.run("warm-up", lambda: None) == "sent"  # a's pool is open
        runs = []
        for i, k in enumerate(keys):
            runs += [asyncio.ensure_future(oa.run(k, partial(sent.append, ("a", k)))),
                     asyncio.ensure_future(ob.run(k, partial(sent.append, ("b", k))))]
            if i == 150:  # half-way, once a has sent some: claims are in flight as it hands over
                async def a_sent() -> bool:
                    return any(n == "a" for n, _ in sent)
                await until(a_sent, what="a sent an action of the stream")
                handover = asyncio.ensure_future(a.close())
            await asyncio.sleep(0.001)  # pacing: a stream, not a burst
        await asyncio.wait_for(asyncio.gather(handover, *runs), 30)
        await b.wait_role("leader", 5)
        async def flushed() -> bool:
            return ob.pending == 0 and not ob._tasks
        await until(flushed, 10, "b flushed what it kept")
        assert sorted(k for _, k in sent) == sorted(keys)  # each once, none lost
        rows = await admin.fetch(
            "SELECT node, token FROM ivr_action WHERE switch = 'pool-handover' AND key <> 'warm-up'")
        assert len(rows) == len(keys)
        assert {(r["node"], r["token"]) for r in rows} <= {("a", first), ("b", b.token)}
        by_node = {n: {k for m, k in sent if m == n} for n in ("a", "b")}
        assert by_node["a"] and by_node["b"], "the handover fell inside the stream"
    finally:
        for x in (oa, ob):
            await x.close()
        for lease in (a, b):
            await lease.close()


@pytest.mark.parametrize(("text", "where"), [
    ("claim_connections = 0", "cluster.claim_connections"),
    ("claim_connections = 65", "cluster.claim_connections"),
    ("claim_timeout = 0", "cluster.claim_timeout"),
    ("claim_timeout = 60", "cluster.claim_timeout"),
])
def test_the_claim_settings_are_checked(tmp_path: Any, text: str, where: str) -> None:
    from ivr.config import load_config
    from ivr.errors import ConfigError

    path = tmp_path / "ivr.toml"
    path.write_text(f'[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\n{text}\n')
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_config(path, env={})


def test_the_claim_settings_reach_the_gate(tmp_path: Any) -> None:
    from ivr.config import load_config

    path = tmp_path / "ivr.toml"
    path.write_text('[database]\nurl = "postgresql://x/y"\n[cluster]\nnode = "a"\nclaim_connections = 8\n'
                    'claim_timeout = 0.5\n')
    config = load_config(path, env={})
    once = Once.from_config(config.cluster, config.database, Lease.from_config(config.cluster, config.database))
    assert (once.connections, once.claim_timeout) == (8, 0.5)
    assert Once.from_config(ClusterConfig(), DatabaseConfig(), None).claims()["connections"] == 4  # the default


async def test_a_database_that_never_answers_holds_even_the_first_claim_only_the_bound(pg: str) -> None:
    """The pool's opening counts in the claim's bound: a leader whose database accepts and
    never answers sends each action after claim_timeout, and the claims share one opening."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    lease = Lease(pg, node="x", switch="pool-hung")
    lease.valid_until = lease.clock() + 30  # the leader, as far as its clock knows
    once = Once(lease, f"postgresql://ivr@127.0.0.1:{hung.getsockname()[1]}/ivr", claim_timeout=0.2,
                connect_timeout=5.0)
    sent: list[int] = []
    try:
        async with asyncio.timeout(3):  # a failure bound: well under the 5 s connect_timeout
            assert await once.run("c/ring/1", partial(sent.append, 1)) == "unrecorded"
            opening = once._opening
            assert opening is not None and not opening.done()  # still opening, never cut
            assert await once.run("c/ring/2", partial(sent.append, 2)) == "unrecorded"
            assert once._opening is opening  # the same opening
        assert sent == [1, 2] and once.unrecorded_why == {"busy": 0, "slow": 2, "error": 0}
    finally:
        await once.close()
        hung.close()
