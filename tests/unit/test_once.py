"""Each action once per switch (ivr.once) on a real PostgreSQL: the key is written before
the action is sent, fenced by the lease's token; a standby keeps what fell due and the new
leader sends, late and at once, what the old one had not sent, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ivr.cluster import Lease
from ivr.once import Once, action_key
from tests.fakes import drain, until
from tests.unit import test_cluster

FAST, pg = test_cluster.FAST, test_cluster.pg  # the lease timings; the PostgreSQL fixture


@pytest.fixture
async def pair(pg: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Lease, Lease, Once, Once]]:
    switch = "once-" + request.node.name[:50].replace("[", "-").replace("]", "")
    a, b = (Lease(pg, node=n, switch=switch, **FAST) for n in ("a", "b"))
    # claim_timeout 10 s: a node's first claim opens its pool (connect, CREATE TABLE) within
    # it, and past it the action goes unrecorded; the bound itself is test_once_pool's subject
    oa, ob = (Once(x, pg, late_limit=5.0, claim_timeout=10.0) for x in (a, b))
    await a.start()
    await a.wait_role("leader", 5)
    await b.start()
    yield a, b, oa, ob
    for x in (oa, ob):
        await x.close()
    for lease in (a, b):
        await lease.close()


async def test_without_a_cluster_it_sends_at_once_and_keeps_nothing() -> None:
    once, sent = Once(), []
    assert await once.run("c/ring/1", lambda: sent.append(1)) == "sent"
    assert await once.run("c/ring/1", lambda: sent.append(2)) == "sent"  # one node: nothing to repeat
    once.submit("c/ring/2", lambda: sent.append(3))
    assert sent == [1, 2, 3] and once.pending == 0


async def test_the_leader_sends_once_and_the_next_leader_skips_what_was_sent(pair) -> None:
    a, b, oa, ob = pair
    sent: list[str] = []
    key = action_key("call-1", "hold", "reminder/1")
    assert await oa.run(key, lambda: sent.append("a")) == "sent"
    assert await oa.run(key, lambda: sent.append("a again")) == "skipped"  # the same key: never twice
    # The standby fires the same action (it follows the same call): kept, not sent.
    assert await ob.run(key, lambda: sent.append("b")) == "pending"
    assert ob.pending == 1
    await a.close()  # a hands over; b's takeover claims the key: already sent, skipped
    await b.wait_role("leader", 5)
    await until(lambda: ob.pending == 0, what="b flushed")
    await drain(ob)  # its flush has claimed the key (and found it sent)
    assert sent == ["a"] and ob.counts["skipped"] == 1 and ob.counts["late"] == 0


async def test_what_fell_due_during_the_takeover_is_sent_late_at_once_by_the_new_leader(pair) -> None:
    a, b, oa, ob = pair
    sent: list[tuple[str, str]] = []
    k1, k2, k3 = (action_key("call-2", "ring", f"leg/{n}") for n in ("warning", "critical", "gone"))
    assert await oa.run(k1, lambda: sent.append(("a", "k1"))) == "sent"
    assert await ob.run(k1, lambda: sent.append(("b", "k1"))) == "pending"
    # a dies (its lease is neither renewed nor released) before k2 falls due; b fires k2 as a standby.
    assert a._task is not None
    a._task.cancel()
    a.valid_until = float("-inf")
    assert await oa.run(k2, lambda: sent.append(("a", "k2"))) == "pending"  # a dying leader sends nothing
    assert await ob.run(k2, lambda: sent.append(("b", "k2"))) == "pending"
    assert await ob.run(k3, lambda: sent.append(("b", "k3")), still=lambda: False) == "pending"
    await b.wait_role("leader", 5)
    await until(lambda: ob.pending == 0, what="b flushed")
    await until(lambda: ("b", "k2") in sent, what="k2 sent late")
    assert sent == [("a", "k1"), ("b", "k2")]  # k1 once, k2 once and late, k3's call moved on
    assert ob.counts["late"] == 1 and ob.counts["skipped"] == 1


async def test_a_node_whose_lease_moved_on_cannot_claim(pair, pg: str) -> None:
    a, b, oa, ob = pair
    token = a.token
    await a.close()
    await b.wait_role("leader", 5)
    # a believes it still leads with its old token (a paused process waking up): fenced out.
    a.token, a.valid_until = token, a.clock() + 10
    sent: list[str] = []
    assert await oa.run(action_key("call-3", "transfer", "offer"), lambda: sent.append("a")) == "pending"
    assert sent == []
    assert await ob.run(action_key("call-3", "transfer", "offer"), lambda: sent.append("b")) == "sent"
    assert sent == ["b"]


async def test_a_node_cut_off_still_announces_what_its_own_fastagi_session_plays(pg: str) -> None:
    """A former leader cut from the database keeps the calls whose FastAGI sessions run on
    it (no other node can play to them): what it plays there is still announced."""
    lease = Lease(pg, node="x", switch="once-here")  # never the leader
    once, sent = Once(lease, pg), []
    assert await once.run("c/hold/1", lambda: sent.append("here"), here=True) == "unrecorded"
    assert await once.run("c/ring/1", lambda: sent.append("ring")) == "pending"
    assert sent == ["here"]
    await once.close()


async def test_pending_actions_expire_after_the_late_limit(pg: str) -> None:
    now = [100.0]
    lease = Lease(pg, node="x", switch="once-expire")
    once = Once(lease, pg, late_limit=2.0, clock=lambda: now[0])
    assert await once.run("c/ring/1", lambda: None) == "pending"  # never the leader
    now[0] += 2.5
    assert await once.run("c/ring/2", lambda: None) == "pending"
    assert once.pending == 1 and once.counts["expired"] == 1
    await once.close()


async def test_a_leader_whose_database_fails_still_sends_and_counts_it(pg: str) -> None:
    lease = Lease(pg, node="x", switch="once-dbdown")
    lease.valid_until = lease.clock() + 10  # the leader, as far as its clock knows
    once = Once(lease, "postgresql://ivr@/postgres?host=/nonexistent", connect_timeout=0.5)
    sent: list[int] = []
    assert await once.run("c/hold/1", lambda: sent.append(1)) == "unrecorded"
    assert sent == [1] and once.counts["unrecorded"] == 1
    await once.close()
