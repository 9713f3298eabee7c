"""Many switches on one database (issue 17): the records carry the switch, every read
takes a switch filter, each switch keeps its own call-backs and open calls; the config's
switch name and advertised API address are checked; the report shows each switch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ivr.config import load_config
from ivr.errors import ConfigError
from ivr.events import CallEvent
from ivr.records import CallFilter, CallStore
from ivr.report import build_report, render_csv, render_html
from tests.unit.test_records import db_url, postgres  # noqa: F401 - fixtures

T0 = 1_760_000_000.0
TZ = ZoneInfo("Asia/Shanghai")


def ev(kind: str, call_id: str, t: float, **data: object) -> CallEvent:
    return CallEvent(kind, call_id, dict(data), at=T0 + t)


def a_call(call_id: str, caller: str, agent: str, rings: int) -> list[CallEvent]:
    return [ev("call.arrived", call_id, 0, caller=caller), ev("ring.started", call_id, 1, agent=agent),
            ev("ring.alarm", call_id, 16, agent=agent, level="warning", rings=3),
            ev("ring.answered", call_id, 18, agent=agent, rings=rings),
            ev("hold.start", call_id, 30), ev("message.recorded", call_id, 40, item=f"m-{call_id}", phone=caller),
            ev("callback.requested", call_id, 41, item=f"cb-{call_id}", phone="13900000009", target="")]


@pytest.fixture
async def pair(db_url: str) -> AsyncIterator[tuple[CallStore, CallStore]]:  # noqa: F811
    a, b = await CallStore.open(db_url, switch="sw-a"), await CallStore.open(db_url, switch="sw-b")
    for e in a_call("a-1.1", "13800000001", "1001", 2):
        await a.apply(e)
    for e in a_call("b-1.1", "13800000002", "2001", 5):
        await b.apply(e)
    await b.apply(ev("call.arrived", "b-2.1", 100, caller="13800000003"))  # still open
    yield a, b
    await a.close()
    await b.close()


async def test_every_record_carries_its_switch(pair: tuple[CallStore, CallStore]) -> None:
    a, b = pair
    calls = {c["call_id"]: c["switch"] for c in await a.calls(CallFilter())}
    assert calls == {"a-1.1": "sw-a", "b-1.1": "sw-b", "b-2.1": "sw-b"}  # any node reads every switch
    call = await b.call("a-1.1")
    assert call is not None and {e["switch"] for e in call["events"]} == {"sw-a"}
    assert [(m["message_id"], m["switch"]) for m in await b.messages(switch="sw-a")] == [("m-a-1.1", "sw-a")]
    assert {c["switch"] for c in await a.callbacks()} == {"sw-a", "sw-b"}


async def test_reads_take_a_switch_filter(pair: tuple[CallStore, CallStore]) -> None:
    a, _ = pair
    assert [c["call_id"] for c in await a.calls(CallFilter(switch="sw-b", limit=10))] == ["b-2.1", "b-1.1"]
    assert [r["agent"] for r in await a.alarms(switch="sw-b")] == ["2001"]
    assert [r["call_id"] for r in await a.ring_legs(None, None, "sw-a")] == ["a-1.1"]
    assert [r["call_id"] for r in await a.holds(None, None, "sw-b")] == ["b-1.1"]
    assert await a.ended_calls(None, None, "sw-a") == []
    assert [r["callback_id"] for r in await a.callbacks(switch="sw-b")] == ["cb-b-1.1"]
    assert await a.calls(CallFilter(switch="nowhere")) == []
    assert await a.switches() == ["sw-a", "sw-b"]


async def test_each_switch_keeps_its_own_open_calls_and_call_backs(pair: tuple[CallStore, CallStore]) -> None:
    a, b = pair
    # Reconciling with the switch's channels must never close another switch's calls.
    assert sorted(await a.open_calls()) == ["a-1.1"]
    assert sorted(await b.open_calls()) == ["b-1.1", "b-2.1"]
    # The same number and target on two switches: two call-backs, each switch places its own.
    assert [r["callback_id"] for r in await a.queue.open()] == ["cb-a-1.1"]
    assert [r["callback_id"] for r in await b.queue.open()] == ["cb-b-1.1"]
    assert [r["callback_id"] for r in await a.queue.open_elsewhere()] == ["cb-b-1.1"]
    assert await a.queue.open_elsewhere("sw-a") == []
    assert await b.queue.start_attempt("cb-b-1.1", "2001", T0 + 50) is not None
    assert await a.queue.recover(T0 + 60) == 0  # switch A's restart leaves B's attempt alone
    assert (await b.queue.get("cb-b-1.1") or {})["status"] == "dialling"
    assert await b.queue.recover(T0 + 60) == 1
    # A caller reaching an agent on switch A cancels A's call-back for that number only.
    await a.apply(ev("call.arrived", "a-2.1", 200, caller="13900000009"))
    await a.apply(ev("ring.answered", "a-2.1", 210, agent="1001", rings=1))
    status = {r["callback_id"]: r["status"] for r in await a.callbacks()}
    assert status == {"cb-a-1.1": "cancelled", "cb-b-1.1": "open"}
    assert len(await a.queue.attempts(None, None, "sw-b")) == 1
    assert await a.queue.attempts(None, None, "sw-a") == []


async def test_the_report_shows_each_switch(pair: tuple[CallStore, CallStore]) -> None:
    a, _ = pair
    day = datetime.fromtimestamp(T0, TZ).date()
    every = await build_report(a, day, day, TZ)
    assert [(s["switch"], s["calls"], s["answered"], s["within_three"], s["alarms"]) for s in every["switches"]] \
        == [("sw-a", 1, 1, 1, 1), ("sw-b", 2, 1, 0, 1)]
    assert every["switch"] is None and every["totals"]["calls"] == 3
    only_b = await build_report(a, day, day, TZ, switch="sw-b")
    assert only_b["totals"]["calls"] == 2 and [s["switch"] for s in only_b["switches"]] == ["sw-b"]
    assert only_b["totals"]["callbacks"] == 1 and [g["agent"] for g in only_b["agents"]] == ["2001"]
    assert "switch,sw-b,2,1,0" in render_csv(only_b)
    assert "switch sw-b" in render_html(only_b) and "<h2>Per switch</h2>" in render_html(every)


async def test_rows_kept_before_the_migration_belong_to_the_default_switch(db_url: str) -> None:  # noqa: F811
    from ivr.records import connect
    from ivr.records.migrations import bundled, migrate

    db = await connect(db_url)
    try:
        await migrate(db, [m for m in bundled() if m.version <= 2])
        await db.execute("INSERT INTO calls (call_id, arrived_at, state, state_since, updated_at)"
                         " VALUES ('1.0', 1, 'ended', 1, 1)")
        await migrate(db)
        row = await db.fetchone("SELECT switch FROM calls WHERE call_id = '1.0'")
        assert row == {"switch": "default"}
    finally:
        await db.close()


# -- configuration ---------------------------------------------------------------------------

def _config(tmp_path: Path, cluster: str) -> Any:
    path = tmp_path / "ivr.toml"
    path.write_text('[database]\nurl = "postgresql://ivr@db/ivr"\n[cluster]\n' + cluster, encoding="utf-8")
    return load_config(str(path))


def test_the_switch_name_is_checked_even_without_a_cluster(tmp_path: Path) -> None:
    assert load_config(None).cluster.switch == "default"
    assert _config(tmp_path, 'switch = "beijing-1"\n').cluster.switch == "beijing-1"
    for bad in ("", "a b", "-lead", "x" * 64, "sw\\n1", "é"):
        with pytest.raises(ConfigError, match=r"cluster\.switch"):
            _config(tmp_path, f'switch = "{bad}"\n')


@pytest.mark.parametrize("url", ["http://10.0.0.2:8080", "https://ivr-a.example:8443/", "http://[::1]:80"])
def test_an_advertised_address_is_scheme_host_and_port(tmp_path: Path, url: str) -> None:
    assert _config(tmp_path, f'node = "n1"\nadvertise = "{url}"\n').cluster.advertise == url


@pytest.mark.parametrize("url", ["ftp://h:1", "http://u:p@h:1", "http://h:1/api", "http://h:1?x=1",
                                 "http://h:99999", "h:8080", "http://", "http://h:1#f", "http://h :1"])
def test_a_bad_advertised_address_is_named(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.advertise"):
        _config(tmp_path, f'node = "n1"\nadvertise = "{url}"\n')


def test_the_forward_timeout_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.forward_timeout"):
        _config(tmp_path, 'node = "n1"\nforward_timeout = 600\n')


# -- where each switch's leader is (PostgreSQL) -----------------------------------------------

@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the lease lives in PostgreSQL only
async def test_the_leader_is_found_with_its_published_address(db_url: str) -> None:  # noqa: F811
    from ivr.cluster import ACQUIRE, SCHEMA
    from ivr.http.forward import Forwarder, LeaderUnavailable
    from ivr.records import connect

    db = await connect(db_url)
    try:
        fwd = Forwarder(switch="sw-a", node="a1", advertise="http://10.0.0.1:8080", acting=lambda: True,
                        db=lambda: db)
        with pytest.raises(LeaderUnavailable, match="sw-a: the leader cannot be looked up"):
            await fwd.leader("sw-a")  # no lease table yet: a clear 503
        await db.execute(SCHEMA)
        await fwd.register(db)
        assert (await fwd.leader("sw-a")).node is None  # nobody has led switch A yet
        await Forwarder(switch="sw-a", node="a2", advertise="http://10.0.0.2:8080", acting=lambda: False,
                        db=lambda: db).register(db)
        await db.execute(ACQUIRE.replace("$1", "?").replace("$2", "?").replace("$3", "?"), ("sw-a", "a2", 5.0))
        leader = await fwd.leader("sw-a")
        assert (leader.node, leader.api_url, leader.live) == ("a2", "http://10.0.0.2:8080", True)
        await fwd.register(db)  # again (the records reopened): one row per node
        rows = await db.fetchall("SELECT node, api_url FROM ivr_nodes ORDER BY node")
        assert rows == [{"node": "a1", "api_url": "http://10.0.0.1:8080"},
                        {"node": "a2", "api_url": "http://10.0.0.2:8080"}]
        await db.execute("UPDATE ivr_lease SET expires_at = now() - interval '1 second'")
        assert (await fwd.leader("sw-a")).live is False
    finally:
        await db.close()


# -- the API and the dashboard ----------------------------------------------------------------

async def test_the_api_lists_every_switch_and_filters_by_one(pair: tuple[CallStore, CallStore],
                                                             aiohttp_client: Any) -> None:
    from prometheus_client import CollectorRegistry

    from ivr.events import EventBus
    from ivr.http import HttpSettings, Services, build_app

    a, _ = pair
    services = Services(store=a, bus=EventBus(), tz=TZ, registries=[CollectorRegistry()], switch="sw-a")
    client = await aiohttp_client(build_app(services, HttpSettings(token="t" * 24)))
    auth = {"Authorization": "Bearer " + "t" * 24}

    async def get(path: str) -> Any:
        resp = await client.get(path, headers=auth)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    assert {c["switch"] for c in (await get("/api/calls"))["calls"]} == {"sw-a", "sw-b"}
    assert [c["call_id"] for c in (await get("/api/calls?switch=sw-a"))["calls"]] == ["a-1.1"]
    assert [m["switch"] for m in (await get("/api/messages?switch=sw-b"))["messages"]] == ["sw-b"]
    assert [c["switch"] for c in (await get("/api/callbacks?switch=sw-b"))["callbacks"]] == ["sw-b"]
    assert [r["agent"] for r in (await get("/api/alarms?switch=sw-a"))["alarms"]] == ["1001"]
    day = datetime.fromtimestamp(T0, TZ).date().isoformat()
    assert [g["agent"] for g in (await get(f"/api/agents?from={day}&switch=sw-b"))["agents"]] == ["2001"]
    snap = await get("/api/dashboard")
    assert (snap["switch"], snap["switches"], snap["filter"]) == ("sw-a", ["sw-a", "sw-b"], None)
    assert sorted((c["switch"], c["call_id"]) for c in snap["live"]) \
        == [("sw-a", "a-1.1"), ("sw-b", "b-1.1"), ("sw-b", "b-2.1")]
    assert [(c["switch"], c["place"]) for c in snap["callbacks"]] == [("sw-a", 1), ("sw-b", 1)]
    only_b = await get("/api/dashboard?switch=sw-b")
    assert {c["switch"] for c in only_b["live"]} == {"sw-b"} and [c["switch"] for c in only_b["callbacks"]] == ["sw-b"]
    for bad in ("a%20b", "-x", "x" * 64, "sw%0A1", "%C3%A9"):
        resp = await client.get(f"/api/calls?switch={bad}", headers=auth)
        body = await resp.json()
        assert resp.status == 400 and body["error_id"] == "invalid-switch", body


async def test_call_ids_without_a_systemname_are_said_once(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    named, default = await CallStore.open(url, switch="sw-a"), await CallStore.open(url)
    try:
        with capture_logs() as logs:
            await named.apply(ev("call.arrived", "swa-1760000000.1", 0))
            await default.apply(ev("call.arrived", "1760000000.2", 0))  # one switch: nothing to collide with
            for n in (3, 4):
                await named.apply(ev("call.arrived", f"1760000000.{n}", 0))
        said = [e for e in logs if e["event"] == "records.call_ids_without_systemname"]
        assert [(e["switch"], e["call_id"]) for e in said] == [("sw-a", "1760000000.3")]
    finally:
        await named.close()
        await default.close()
