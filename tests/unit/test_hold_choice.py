"""What the held caller chose at the limit, on record (R4: keep waiting, message, call-back,
or none), and hold records that tell the truth: the ``hold.choice`` event the hold service
publishes, the holds row the records derive from it (SQLite and PostgreSQL, the ``db_url``
fixture of test_records), the report's and the dashboard's figures; a hold's stage that
keeps its trigger and the caller's choice to wait on across a takeover; a hold route that
outlives its hold plays nothing more."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from ivr.events import CallEvent
from ivr.hold.service import HoldError
from ivr.records import CallStore
from ivr.records.figures import hold_choices, today_summary
from ivr.records.spans import Logged, fold_holds
from ivr.rules.hold import HOLD_CHOICES, hold_stage, parse_hold_stage
from tests import REPO
from tests.fakes import FakeAgi, until
from tests.unit.test_hold_service import CALLER, advance, start_held, world  # noqa: F401 - fixture
from tests.unit.test_records import db_url, postgres  # noqa: F401 - fixtures

T0 = 1_760_000_000.0


async def on_record(db: str, events: list[CallEvent]) -> dict[str, Any]:
    """The call's holds as the records derive them from ``events``."""
    store = await CallStore.open(db)
    try:
        for e in events:
            await store.apply(e)
        call = await store.call(CALLER)
        assert call is not None
        return call
    finally:
        await store.close()


# -- the service publishes the choice ------------------------------------------------------
@pytest.mark.parametrize(("keys", "choice", "outcome"), [
    (("2",), "message", "message"), (("3", "1"), "callback", "callback")])
async def test_the_callers_choice_is_on_record(world: Any, db_url: str, keys: tuple[str, ...],  # noqa: F811 - fixtures
                                               choice: str, outcome: str) -> None:
    """Key 2 or 3 at the limit: ``hold.choice`` (the leader's decision, under the keeper's id
    and the choice) before what the choice leads to; the hold on record says what the caller
    chose and how it ended; the metric counts it."""
    ami, service, clock, timers, events, metrics = world
    agi, task = await start_held(ami, service)
    keeper = service.sessions[CALLER].keeper
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press(keys[0])
    for key in keys[1:]:  # the call-back's best time: as soon as possible
        await until(lambda: "callback_when" in agi.played())
        agi.press(key)
    await asyncio.wait_for(task, 2)
    [chose] = [e for e in events if e.kind == "hold.choice"]
    assert chose.data["choice"] == choice and chose.data["held_seconds"] == 60.0 and chose.origin == "node"
    assert chose.id == service.bus.decided_id(CALLER, (keeper, f"hold.choice/{choice}"))
    kinds = [e.kind for e in events]
    assert kinds.index("hold.choice") < kinds.index("message.recorded" if choice == "message" else "callback.requested")
    assert metrics.value("ivr_hold_choices_total", {"choice": choice}) == 1
    [hold] = (await on_record(db_url, list(events)))["holds"]
    assert (hold["choices_offered"], hold["choice"], hold["outcome"]) == (1, choice, outcome)


async def test_a_key_pressed_twice_is_one_record_and_the_latest_choice_stands(
        world: Any, db_url: str) -> None:  # noqa: F811 - fixtures
    """1 at the choices, 1 again during the next reminder (one record: the same id), then 2
    during the one after: the hold on record ends ``message``, chosen ``message``."""
    ami, service, clock, timers, events, metrics = world
    service.wall = lambda: 1.7e9 + clock.t - 1000.0  # the choices' times follow the hold's clock
    agi, task = await start_held(ami, service)
    await advance(clock, timers, 60.0)
    await until(lambda: "hold_choices" in agi.played())
    agi.press("1")
    await until(lambda: metrics.value("ivr_hold_choices_total", {"choice": "keep"}) == 1)
    for n, (at, key) in enumerate(((90.0, "1"), (120.0, "2")), 2):
        agi.on_play["hold_reminder"] = functools.partial(agi.press, key)  # pressed during the reminder
        await advance(clock, timers, at)
        await until(lambda n=n: sum(metrics.value("ivr_hold_choices_total", {"choice": c}) for c in HOLD_CHOICES) == n)
    await asyncio.wait_for(task, 2)
    chose = [e for e in events if e.kind == "hold.choice"]
    assert [e.data["choice"] for e in chose] == ["keep", "keep", "message"]
    assert chose[0].id == chose[1].id != chose[2].id
    store = await CallStore.open(db_url)
    try:
        written = [await store.apply(e) for e in events]
        assert written == [e is not chose[1] for e in events]  # the second 1: a duplicate
        call = await store.call(CALLER)
        assert call is not None
        [hold] = call["holds"]
        assert (hold["reminders"], hold["choice"], hold["outcome"]) == (2, "message", "message")
    finally:
        await store.close()


# -- only the known choices reach the record ---------------------------------------------
def logged(kind: str, at: float, **data: Any) -> Logged:
    return Logged(f"{kind}-{at}", kind, T0 + at, data)


def test_the_fold_records_only_known_choices() -> None:
    events = [logged("hold.start", 0), logged("hold.choices", 60), logged("hold.choice", 61, choice="keep"),
              logged("hold.choice", 62, choice="drop table holds"), logged("hold.choice", 63, choice=["message"]),
              logged("hold.choice", 64, choice=None), logged("hold.resume", 70, held_seconds=70.0)]
    [hold], after = fold_holds(events, None)
    assert (hold["choices_offered"], hold["choice"], hold["outcome"], after) == (1, "keep", "resumed", [])
    [hold], _ = fold_holds([events[0], events[1], events[3], events[-1]], None)
    assert (hold["choices_offered"], hold["choice"]) == (1, None)  # offered, nothing known chosen


async def test_an_unknown_choice_never_reaches_the_row(db_url: str) -> None:  # noqa: F811 - fixture
    """Folded one step at a time (the call goes on) and derived again at the end: the same."""
    events = [CallEvent("hold.start", CALLER, {"via": "api"}, at=T0),
              CallEvent("hold.choices", CALLER, {}, at=T0 + 60),
              CallEvent("hold.choice", CALLER, {"choice": "9'); DROP TABLE holds; --"}, at=T0 + 61)]
    call = await on_record(db_url, events)
    assert [(h["choices_offered"], h["choice"]) for h in call["holds"]] == [(1, None)]
    ended = CallEvent("call.ended", CALLER, {"hung_up_first": "caller"}, at=T0 + 90)
    call = await on_record(db_url, [*events, CallEvent("hold.choice", CALLER, {"choice": 3}, at=T0 + 62), ended])
    assert [(h["choice"], h["outcome"]) for h in call["holds"]] == [(None, "ended")]


async def test_the_apis_hold_schema_names_every_column_of_a_hold(tmp_path: Path) -> None:
    """``GET /api/calls/{id}`` lists the call's holds as the records keep them: the OpenAPI
    document's Hold (with ``choice``) says what each row holds."""
    doc = json.loads((REPO / "ivr" / "http" / "openapi.json").read_text(encoding="utf-8"))
    schema = doc["components"]["schemas"]["Hold"]
    [detail] = [s for s in doc["components"]["schemas"]["CallDetail"]["allOf"] if "properties" in s]
    assert detail["properties"]["holds"]["items"] == {"$ref": "#/components/schemas/Hold"}
    call = await on_record(f"sqlite:///{tmp_path / 'calls.db'}", [
        CallEvent("hold.start", CALLER, {}, at=T0), CallEvent("hold.choice", CALLER, {"choice": "keep"}, at=T0 + 61)])
    [hold] = call["holds"]
    assert set(hold) == set(schema["properties"]) and hold["choice"] in schema["properties"]["choice"]["enum"]


# -- the figures -------------------------------------------------------------------------
def test_the_figures_count_each_choice_of_the_holds_that_reached_the_limit() -> None:
    def hold(duration: float | None, offered: int, choice: str | None) -> dict[str, Any]:
        return {"duration": duration, "choices_offered": offered, "choice": choice}

    holds = [hold(20.0, 0, None), hold(75.0, 1, "keep"), hold(61.0, 1, "message"), hold(62.0, 1, "callback"),
             hold(90.0, 1, None), hold(None, 1, "keep"),  # still on hold: not finished
             hold(65.0, 1, "bogus")]  # not a choice the records write: none
    assert hold_choices(holds) == {"keep": 1, "message": 1, "callback": 1, "none": 2}
    today = today_summary(holds=iter(holds), transfers=[], calls=[])  # an iterator, read twice
    assert (today["holds"], today["hold_choices"]) == (6, {"keep": 1, "message": 1, "callback": 1, "none": 2})


# -- the stage keeps the trigger and the choice to wait on -------------------------------
def test_the_stage_keeps_the_trigger_and_a_choice_to_wait_on() -> None:
    text = hold_stage("1700000000.000", 2, True, "phone", "keep")
    assert text == "hold@1700000000.000@2@1@phone@keep"
    stage = parse_hold_stage(text, 1.7e9 + 70)
    assert (stage.start, stage.age, stage.count, stage.choices_offered, stage.via, stage.choice) == (
        "1700000000.000", 70.0, 2, True, "phone", "keep")
    # an earlier version's stage (a pair upgraded one node at a time): the trigger was not kept
    old = parse_hold_stage("hold@1700000000.000@1@0", 1.7e9 + 40)
    assert (old.via, old.choice, old.count) == ("takeover", "", 1)


@pytest.mark.parametrize("stage", [
    "hold@1700000000.000@1@0@evil@",  # not a trigger
    "hold@1700000000.000@1@0@API@",
    "hold@1700000000.000@2@1@api@message",  # a message ends the hold: never on a stage
    "hold@1700000000.000@2@1@api@1",
    "hold@1700000000.000@1@0@api@keep",  # a choice before the choices
    "hold@1700000000.000@2@1@api@keep@x",
    "hold@1700000000.000@2@1@api",
])
def test_a_hostile_stage_is_refused_naming_what_is_wrong(stage: str) -> None:
    with pytest.raises(ValueError, match="IVR_STAGE"):
        parse_hold_stage(stage, 1.7e9 + 70)


async def test_a_takeover_rebuilds_the_callers_choice_to_wait_on(world: Any) -> None:  # noqa: F811 - fixture
    """The dead node's caller pressed 1 (the stage says keep): the new node records the hold
    with its trigger and the choice, keeps the choice in the stage it writes, and the hold
    goes on (reminders, then the caller may still choose)."""
    ami, service, clock, timers, events, _ = world
    service.tracker.handle({"Event": "BridgeEnter", "Uniqueid": f"ivrkeep-{CALLER}-1", "Linkedid": "k",
                            "Channel": "Local/keep@ivr-hold-00000009;1", "BridgeUniqueid": "b1"})
    agi = FakeAgi(CALLER)
    agi.variables.update(IVR_STAGE=f"hold@{1.7e9 - 70:.3f}@2@1@phone@keep", IVR_HOLD_AGENT="PJSIP/1001-00000002")
    ami.agi = agi
    task = asyncio.ensure_future(service.agi_hold(agi))
    await until(lambda: bool(agi.sent("WAIT FOR DIGIT")))
    assert [(e.kind, e.data.get("via"), e.data.get("choice"), e.at) for e in events] == [
        ("hold.start", "phone", None, 1.7e9 - 70), ("hold.choices", None, None, 1.7e9 - 10),
        ("hold.choice", None, "keep", 1.7e9 - 10)]
    assert all(e.data["rebuilt"] is True for e in events)
    assert agi.variables["IVR_STAGE"] == f"hold@{1.7e9 - 70:.3f}@2@1@phone@keep"
    [held] = service.held()  # GET /api/hold
    assert (held["via"], held["choice"], held["count"]) == ("phone", "keep", 2)
    await advance(clock, timers, 20.0)  # the 90-s reminder
    await until(lambda: agi.played() == ["hold_reminder"])
    assert agi.variables["IVR_STAGE"] == f"hold@{1.7e9 - 70:.3f}@3@1@phone@keep"
    await service.resume(CALLER)
    await asyncio.wait_for(task, 2)


def service_keeper(ami: Any) -> str:
    [originate] = ami.sent("Originate")
    return str(originate["ChannelId"])


# -- a route that outlives its hold -------------------------------------------------------
async def test_a_hold_that_failed_while_its_route_ran_sends_the_caller_back(
        world: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - fixture
    """The Redirect's reply is lost (the hold fails, the keeper goes) although the switch
    ran it: the caller's hold route had begun. Before, that route waited with music and no
    timer for ever; now it ends within one wait slice, leaving no stage, and the dialplan
    takes the caller back to the agent."""
    ami, service, clock, timers, events, _ = world
    agi = FakeAgi(CALLER, wait_cap=0.05)  # the wait slices, short
    ami.agi = agi
    real = ami.action
    routes: list[asyncio.Task[None]] = []

    async def action(a: dict[str, Any], timeout: float = 10.0, **kw: Any) -> Any:
        reply = await real(a, timeout, **kw)
        if a["Action"] == "Redirect":  # the switch ran it: the caller is in the hold route
            routes.append(asyncio.ensure_future(service.agi_hold(agi)))
            await until(lambda: bool(agi.sent("WAIT FOR DIGIT")))
            raise TimeoutError("the Redirect's reply was lost")
        return reply

    monkeypatch.setattr(ami, "action", action)
    with pytest.raises(HoldError):
        await service.hold(CALLER)
    await asyncio.wait_for(routes[0], 2)
    assert (agi.variables["IVR_RESULT"], agi.variables["IVR_STAGE"]) == ("ended", "")
    assert not service.sessions
    [hangup] = ami.sent("Hangup")  # the keeper goes, by the id it was given (its name never came back)
    assert hangup["Channel"] == service_keeper(ami)
    await advance(clock, timers, 31.0)
    assert agi.played() == [] and ami.states() == ["start"]
    assert [e.kind for e in events] == ["hold.start"]


async def test_a_reminder_waiting_when_the_caller_hangs_up_is_not_announced(world: Any) -> None:  # noqa: F811 - fixture
    """The 90-s reminder falls due while the choices still play and its wake-up is lost;
    then the switch confirms the caller's hang-up (AMI) before the route hears of it. The
    route plays and announces nothing more: no reminder on record after the abandon (it
    would have opened a hold of its own)."""
    ami, service, clock, timers, events, _ = world
    agi, task = await start_held(ami, service)
    done = asyncio.Event()

    async def meanwhile() -> None:
        ami.agi = None  # the wake-up digit does not reach the route
        await advance(clock, timers, 90.0)  # the reminder, queued for the route
        ami.event({"Event": "Hangup", "Uniqueid": CALLER})  # confirmed by the switch: abandoned
        await until(lambda: CALLER not in service.sessions)
        done.set()
        agi.press("D")  # the prompt ends

    tasks: list[asyncio.Future[None]] = []
    agi.prompt_s = 5.0  # the choices prompt lasts until pressed
    agi.on_play["hold_choices"] = lambda: tasks.append(asyncio.ensure_future(meanwhile()))
    await advance(clock, timers, 60.0)
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(tasks[0], 1)
    assert done.is_set() and agi.played() == ["hold_choices"]
    assert (agi.variables["IVR_RESULT"], agi.variables["IVR_STAGE"]) == ("ended", "")
    assert [e.kind for e in events] == ["hold.start", "hold.choices", "hold.abandon"]
    assert ami.states() == ["start", "choices", "abandon"]
