"""The durable call-back store (issue 18), on SQLite and PostgreSQL: one open call-back per
(phone, target), merged requests keep their place in line, attempts and outcomes, the
number calling in cancels it, a restart mid-attempt loses nothing."""

from __future__ import annotations

import pytest

from ivr.events import CallEvent
from ivr.records import CallStore
from tests.unit.test_records import T0, db_url, ev, postgres, store  # noqa: F401  (fixtures)


def request(t: float, call_id: str, phone: str = "13900000000", **data: object) -> CallEvent:
    return ev("callback.requested", t, call_id, caller_number=phone, agent="1001", **data)


async def test_a_second_request_is_merged_and_keeps_its_place(store: CallStore) -> None:  # noqa: F811
    await store.apply(request(10, "1.0", item="cb-a"))
    await store.apply(request(20, "2.0", item="cb-b", phone="13700000000"))
    await store.apply(request(30, "3.0", item="cb-c", best_time="14:00-16:00"))
    rows = await store.queue.open()
    assert [r["callback_id"] for r in rows] == ["cb-a", "cb-b"]  # no duplicate, first in line
    a = rows[0]
    assert (a["at"], a["requests"], a["best_time"], a["held_by"]) == (T0 + 10, 2, "14:00-16:00", "1001")
    assert (a["next_attempt"], a["last_request"]) == (T0 + 30, T0 + 30)  # "today" counts from the latest request
    # a different target is a different call-back
    await store.apply(request(40, "4.0", item="cb-d", target="1002"))
    assert len(await store.queue.open()) == 3


async def test_attempts_history_and_outcome(store: CallStore) -> None:  # noqa: F811
    await store.apply(request(10, "1.0", item="cb-a"))
    attempt = await store.queue.start_attempt("cb-a", "1001", T0 + 60)
    assert attempt is not None
    assert await store.queue.start_attempt("cb-a", "1002", T0 + 61) is None  # already dialling
    await store.queue.finish_attempt("cb-a", attempt, outcome="busy", status="open", attempts=1,
                                     next_attempt=T0 + 120, burned=True, at=T0 + 70)
    cb = await store.queue.get("cb-a")
    assert cb is not None
    assert (cb["status"], cb["attempts"], cb["next_attempt"], cb["outcome"]) == ("open", 1, T0 + 120, "busy")
    assert [(h["agent"], h["outcome"], h["burned"]) for h in cb["history"]] == [("1001", "busy", 1)]
    # a new request while open: the customer asked again, the attempts start over
    await store.apply(request(80, "2.0", item="cb-x"))
    cb = await store.queue.get("cb-a")
    assert cb is not None and (cb["attempts"], cb["next_attempt"], cb["requests"]) == (0, T0 + 80, 2)


async def test_done_call_back_lets_a_new_one_open(store: CallStore) -> None:  # noqa: F811
    await store.apply(request(10, "1.0", item="cb-a"))
    attempt = await store.queue.start_attempt("cb-a", "1001", T0 + 60)
    assert attempt is not None
    await store.queue.finish_attempt("cb-a", attempt, outcome="connected", status="done", attempts=1,
                                     next_attempt=None, burned=True, at=T0 + 70)
    await store.apply(request(100, "2.0", item="cb-b"))
    assert [r["callback_id"] for r in await store.queue.open()] == ["cb-b"]


async def test_the_number_calling_in_and_reaching_an_agent_cancels(store: CallStore) -> None:  # noqa: F811
    await store.apply(request(10, "1.0", item="cb-a"))
    await store.apply(ev("call.arrived", 200, "9.0", caller="13900000000"))
    await store.apply(ev("ring.started", 201, "9.0", agent="1002"))
    assert len(await store.queue.open()) == 1  # ringing is not reaching an agent
    await store.apply(ev("ring.answered", 205, "9.0", agent="1002", rings=1))
    assert await store.queue.open() == []
    cb = await store.queue.get("cb-a")
    assert cb is not None and (cb["status"], cb["outcome"]) == ("cancelled", "called-in")


async def test_restart_mid_attempt_reopens_without_using_an_attempt(db_url: str) -> None:  # noqa: F811
    s = await CallStore.open(db_url)
    await s.apply(request(10, "1.0", item="cb-a"))
    assert await s.queue.start_attempt("cb-a", "1001", T0 + 60) is not None
    await s.close()
    s = await CallStore.open(db_url)  # a new controller
    try:
        assert await s.queue.recover(T0 + 90) == 1
        cb = await s.queue.get("cb-a")
        assert cb is not None
        assert (cb["status"], cb["attempts"], cb["next_attempt"]) == ("open", 0, T0 + 90)
        assert [(h["outcome"], h["burned"]) for h in cb["history"]] == [("interrupted", 0)]
    finally:
        await s.close()


async def test_cancel_and_retry_now(store: CallStore) -> None:  # noqa: F811
    await store.apply(request(10, "1.0", item="cb-a"))
    row = await store.queue.cancel("cb-a", T0 + 20)
    assert row is not None and row["status"] == "cancelled"
    assert await store.queue.cancel("cb-nope", T0 + 20) is None
    row = await store.queue.retry_now("cb-a", T0 + 30)  # a cancelled one stays cancelled
    assert row is not None and row["status"] == "cancelled"
    await store.apply(request(40, "2.0", item="cb-b"))
    attempt = await store.queue.start_attempt("cb-b", "1001", T0 + 50)
    assert attempt is not None
    await store.queue.finish_attempt("cb-b", attempt, outcome="no-answer", status="failed", attempts=3,
                                     next_attempt=None, burned=True, at=T0 + 60)
    row = await store.queue.retry_now("cb-b", T0 + 70)
    assert row is not None and (row["status"], row["attempts"], row["next_attempt"]) == ("open", 0, T0 + 70)


async def test_migration_merges_requests_kept_before_it(db_url: str) -> None:  # noqa: F811
    """A version-1 database with the same number asked twice: after the migration one open
    call-back stays (the earliest), the other is 'merged', due at its request time."""
    from ivr.records import connect
    from ivr.records.migrations import bundled, migrate

    db = await connect(db_url)
    try:
        await migrate(db, [m for m in bundled() if m.version == 1])
        await db.execute("INSERT INTO calls (call_id, arrived_at, state, state_since, updated_at)"
                         " VALUES ('1.0', 1, 'ended', 1, 1)")
        for cb, at in (("cb-b", 20.0), ("cb-a", 10.0), ("cb-c", 30.0)):
            await db.execute("INSERT INTO callbacks (callback_id, call_id, at, phone, for_agent)"
                             " VALUES (?, '1.0', ?, ?, '1001')",
                             (cb, at, "139" if cb != "cb-c" else "137"))
        assert await migrate(db, [m for m in bundled() if m.version <= 2]) == [2]
        rows = {r["callback_id"]: r for r in await db.fetchall("SELECT * FROM callbacks")}
        assert {k: r["status"] for k, r in rows.items()} == {"cb-a": "open", "cb-b": "merged", "cb-c": "open"}
        assert (rows["cb-a"]["target"], rows["cb-a"]["held_by"], rows["cb-a"]["next_attempt"]) == ("", "1001", 10.0)
    finally:
        await db.close()


async def test_reopening_beside_an_open_one_is_a_conflict(store: CallStore) -> None:  # noqa: F811
    from ivr.records.callbacks import CallbackConflict

    await store.apply(request(10, "1.0", item="cb-a"))
    await store.queue.cancel("cb-a", T0 + 20)
    await store.apply(request(30, "2.0", item="cb-b"))  # a new one: cb-a is not open any more
    with pytest.raises(CallbackConflict):
        await store.set_callback_status("cb-a", "open")
    await store.set_callback_status("cb-a", "failed")
    with pytest.raises(CallbackConflict):
        await store.queue.retry_now("cb-a", T0 + 40)  # a failed one opens again only alone
    assert [r["callback_id"] for r in await store.queue.open()] == ["cb-b"]
    done = await store.set_callback_status("cb-a", "done")
    assert done is not None and done["status"] == "done"


async def test_a_window_chosen_by_the_caller_is_not_due_before_it_opens(store: CallStore) -> None:  # noqa: F811
    """The caller chose a window that opens later (``not_before``): stored with the window,
    due at its opening; a merged request with a window moves the next attempt too."""
    await store.apply(request(10, "1.0", item="cb-w", best_time="09:00-12:00", not_before=T0 + 5000))
    [row] = await store.queue.open()
    assert (row["best_time"], row["next_attempt"], row["at"]) == ("09:00-12:00", T0 + 5000, T0 + 10)
    await store.apply(request(20, "2.0", item="cb-w2", best_time="today", not_before=T0 + 20))
    [row] = await store.queue.open()
    assert (row["callback_id"], row["best_time"], row["next_attempt"]) == ("cb-w", "today", T0 + 20)
