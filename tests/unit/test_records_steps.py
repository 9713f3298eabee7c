"""A hold's or a ring leg's event that is the latest of its kinds, on a call that goes on, is
folded in one step (records/steps.py) instead of deriving every row again from all the
call's events (records/spans.py): the rows are the same as the full fold's after every
event, in time order and out of order, and the full derivation runs only when it must
(the end, a late event). SQLite and PostgreSQL (the ``db_url`` fixture of test_records)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from ivr.events import CallEvent
from ivr.records import CallStore, spans
from ivr.records.db import Tx
from tests.unit.test_records import db_url, postgres  # noqa: F401 - fixtures

T0 = 1_760_000_000.0


def queue_call(call_id: str, members: int = 5, rounds: int = 3) -> list[CallEvent]:
    """A queue call in time order: ``members`` rung in ``rounds`` rounds (the last answered by
    the first member), alarms, a leg whose start was missed, an agent rung twice on one
    Uniqueid-less leg, holds (a reminder, choices, a reminder whose start was missed), the end."""
    out = [CallEvent("call.started", call_id, {"caller": "555"}, at=T0)]
    at = T0 + 3
    for r in range(rounds):
        for m in range(members):
            out.append(CallEvent("ring.started", call_id, {"agent": f"20{m}", "uniqueid": f"{call_id}-{r}-{m}"},
                                 at=at + m * 0.01))
        out.append(CallEvent("ring.alarm", call_id, {"agent": "200", "level": "warning", "rings": 3}, at=at + 14))
        for m in range(members):
            data: dict[str, Any] = {"agent": f"20{m}", "uniqueid": f"{call_id}-{r}-{m}", "rings": 3}
            if r == rounds - 1 and m == 0:
                out.append(CallEvent("ring.answered", call_id, {**data, "within_three": True}, at=at + 14.5))
            else:
                out.append(CallEvent("ring.noanswer", call_id, {**data, "reason": "noanswer"}, at=at + 15 + m * 0.01))
        at += 20
    out += [
        CallEvent("ring.noanswer", call_id, {"agent": "299", "uniqueid": "missed", "rings": 2}, at=at),
        CallEvent("ring.started", call_id, {"agent": "300"}, at=at + 1),
        CallEvent("ring.started", call_id, {"agent": "300"}, at=at + 2),
        CallEvent("ring.noanswer", call_id, {"agent": "300", "rings": 1}, at=at + 3),
        CallEvent("hold.start", call_id, {"via": "key"}, at=at + 10),
        CallEvent("hold.reminder", call_id, {"count": 1}, at=at + 40),
        CallEvent("hold.choices", call_id, {}, at=at + 70),
        CallEvent("hold.choice", call_id, {"choice": "keep"}, at=at + 71),
        CallEvent("hold.resume", call_id, {"held_seconds": 62.5}, at=at + 72.5),
        CallEvent("callback.requested", call_id, {"via": "api", "phone": "555"}, at=at + 80),
        CallEvent("hold.reminder", call_id, {"count": 1}, at=at + 90),
        CallEvent("hold.abandon", call_id, {}, at=at + 95.25),
        CallEvent("hold.start", call_id, {}, at=at + 100),
        CallEvent("call.ended", call_id, {"hung_up_first": "caller"}, at=at + 130),
    ]
    return out


async def same_as_the_fold(store: CallStore, call_id: str) -> None:
    """The call's holds, ring legs and their figures on record are the full fold's."""
    async def read(tx: Tx) -> tuple[Any, ...]:
        end = await spans.call_end(tx, call_id)
        holds, _ = spans.fold_holds(await spans.logged(tx, call_id, spans.HOLD_KINDS), end)
        legs, _, agent = spans.fold_legs(await spans.logged(tx, call_id, spans.RING_KINDS), end)
        have_holds = await tx.fetchall("SELECT * FROM holds WHERE call_id = ?", (call_id,))
        have_legs = await tx.fetchall("SELECT * FROM ring_legs WHERE call_id = ?", (call_id,))
        call = (await tx.fetchall("SELECT agent, hold_count, hold_seconds FROM calls WHERE call_id = ?",
                                  (call_id,)))[0]
        return holds, legs, agent, have_holds, have_legs, call

    holds, legs, agent, have_holds, have_legs, call = await store.db.run(read)

    def rows(found: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        return sorted(({k: v for k, v in r.items() if k != "call_id"} for r in found), key=lambda r: r[key])

    assert rows(have_holds, "hold_id") == rows(holds, "hold_id")
    assert rows(have_legs, "leg_id") == rows(legs, "leg_id")
    closed = [h["duration"] for h in holds if h["ended_at"] is not None]
    assert (call["hold_count"], call["hold_seconds"]) == (len(closed), float(sum(closed)))
    if agent is not None:
        assert call["agent"] == agent


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the full derivation of holds and legs runs, by the kind that ran it."""
    runs: dict[str, int] = {}
    for name in ("holds", "legs"):
        full = getattr(spans, name)

        async def counted(tx: Tx, call_id: str, end: float | None, full: Any = full, name: str = name) -> Any:
            runs[name] = runs.get(name, 0) + 1
            return await full(tx, call_id, end)

        monkeypatch.setattr(spans, name, counted)
    return runs


async def test_in_time_order_each_event_is_one_step(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - fixture
    """A queue call written in time order: after every event the rows are the full fold's,
    and the full derivation ran only at the end (once for holds, once for legs)."""
    runs = counting(monkeypatch)
    store = await CallStore.open(db_url)
    try:
        for event in queue_call("q-1.1"):
            assert await store.apply(event) is True
            await same_as_the_fold(store, "q-1.1")
        assert runs == {"holds": 1, "legs": 1}
        call = await store.call("q-1.1")
        assert call is not None
        assert (call["agent"], call["hold_count"], call["hold_seconds"]) == ("300", 3, 62.5 + 5.25 + 30)
        legs = call["ring_legs"]
        assert len(legs) == 15 + 1 + 2
        assert sum(1 for leg in legs if leg["outcome"] == "answered") == 1
        assert [leg["outcome"] for leg in legs if leg["agent"] == "300"] == ["hangup", "noanswer"]
        assert [(h["reminders"], h["choice"], h["outcome"]) for h in call["holds"]] == [
            (1, "keep", "resumed"), (1, None, "abandoned"), (0, None, "ended")]
    finally:
        await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_out_of_order_gives_the_rows_of_time_order(db_url: str, seed: int,  # noqa: F811 - fixture
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Neighbours swapped at random (events a few ms to seconds late, as two nodes write
    them) and the end written early: steps and full derivations interleave, and after every
    event the rows are the full fold's; at the end, those of time order."""
    runs = counting(monkeypatch)
    store = await CallStore.open(db_url)
    try:
        for event in queue_call("q-0.1"):
            await store.apply(event)
        want = await store.call("q-0.1")
        rnd = random.Random(seed)  # noqa: S311 - a fixed shuffle, not a secret
        events = queue_call("q-9.1")
        for i in range(len(events) - 1):
            if rnd.random() < 0.4:
                events[i], events[i + 1] = events[i + 1], events[i]
        if seed == 3:  # the standby's end first, then all the rest
            events.insert(0, events.pop(next(i for i, e in enumerate(events) if e.kind == "call.ended")))
        before = dict(runs)
        for event in events:
            await store.apply(event)
            await same_as_the_fold(store, "q-9.1")
        assert runs != before  # some events were late: derived in full
        got = await store.call("q-9.1")
        assert want is not None and got is not None
        for table, key in (("holds", "hold_id"), ("ring_legs", "leg_id")):
            strip = [{k: v for k, v in r.items() if k not in (key, "call_id")} for r in got[table]]
            assert strip == [{k: v for k, v in r.items() if k not in (key, "call_id")} for r in want[table]], table
        assert (got["agent"], got["hold_count"], got["hold_seconds"]) == (
            want["agent"], want["hold_count"], want["hold_seconds"])
    finally:
        await store.close()


async def test_an_open_leg_the_fold_did_not_make_is_derived_again(db_url: str) -> None:  # noqa: F811 - fixture
    """A ring leg open on record with no start event behind it (written by an earlier
    version): the end of a leg is not a step then; the derivation puts the rows right."""
    store = await CallStore.open(db_url)
    try:
        await store.apply(CallEvent("ring.started", "q-3.1", {"agent": "201", "uniqueid": "u1"}, at=T0 + 1))
        await store.db.execute("INSERT INTO ring_legs (leg_id, call_id, agent, started_at) VALUES (?, ?, ?, ?)",
                               ("old-row", "q-3.1", "201", T0))
        await store.apply(CallEvent("ring.noanswer", "q-3.1", {"agent": "201", "uniqueid": "u1", "rings": 3},
                                    at=T0 + 16))
        await same_as_the_fold(store, "q-3.1")
        call = await store.call("q-3.1")
        assert call is not None
        assert [(leg["started_at"], leg["outcome"]) for leg in call["ring_legs"]] == [(T0 + 1, "noanswer")]
    finally:
        await store.close()


async def test_two_nodes_writing_one_queue_call_at_once(db_url: str) -> None:  # noqa: F811 - fixture
    """Two stores on one database write a queue call's events two at a time, the pair's
    writes at the same moment (each node's step reads under the call's row lock what the
    other committed): the rows are the full fold's, and those of one writer in time order."""
    one, two = await CallStore.open(db_url), await CallStore.open(db_url)
    try:
        for event in queue_call("q-5.1", members=4, rounds=2):
            await one.apply(event)
        want = await one.call("q-5.1")
        for n in range(3):
            events = queue_call(f"q-6{n}.1", members=4, rounds=2)
            for i in range(0, len(events), 2):
                await asyncio.gather(*(store.apply(e) for store, e in zip((one, two), events[i:i + 2], strict=False)))
            await same_as_the_fold(one, f"q-6{n}.1")
            got = await two.call(f"q-6{n}.1")
            assert want is not None and got is not None
            for table, key in (("holds", "hold_id"), ("ring_legs", "leg_id")):
                strip = [{k: v for k, v in r.items() if k not in (key, "call_id")} for r in got[table]]
                assert strip == [{k: v for k, v in r.items() if k not in (key, "call_id")} for r in want[table]]
    finally:
        await one.close()
        await two.close()
