"""``ivr report``: figures per agent and per day, distributions, and the three formats."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.cli import main
from ivr.events import CallEvent
from ivr.records import CallStore

TZ = ZoneInfo("Asia/Shanghai")


def at(day: int, hour: int, minute: int = 0, second: float = 0) -> float:
    return datetime(2025, 3, day, hour, minute, tzinfo=TZ).timestamp() + second


def call(call_id: str, start: float, agent: str, rings: int, talk: float, first: str,
         hold: float | None = None, choice: str | None = None) -> list[CallEvent]:
    events = [
        CallEvent("call.arrived", call_id, {}, at=start),
        CallEvent("ring.started", call_id, {"agent": agent}, at=start + 1),
        *[CallEvent("ring.alarm", call_id, {"agent": agent, "level": lvl, "rings": n}, at=start + 1 + 5 * n)
          for n, lvl in ((3, "warning"), (6, "critical")) if rings > n],
        CallEvent("ring.answered", call_id, {"agent": agent, "rings": rings}, at=start + 1 + 5 * (rings - 1)),
    ]
    answered = start + 1 + 5 * (rings - 1)
    if hold is not None:  # the talk goes on after the hold
        events.append(CallEvent("hold.start", call_id, {}, at=answered + 1))
        if hold > 60:  # the choices at the limit, and what the caller pressed
            events.append(CallEvent("hold.choices", call_id, {}, at=answered + 61))
            if choice is not None:
                events.append(CallEvent("hold.choice", call_id, {"choice": choice}, at=answered + 62))
        events.append(CallEvent("hold.resume", call_id, {"held_seconds": hold}, at=answered + 1 + hold))
        talk += 1 + hold
    events.append(CallEvent("call.ended", call_id, {"hung_up_first": first}, at=answered + talk))
    return events


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'calls.db'}"

    async def fill() -> None:
        store = await CallStore.open(url)
        for e in [
            *call("a", at(3, 9), "1001", rings=1, talk=60, first="caller"),
            *call("b", at(3, 10), "1001", rings=4, talk=200, first="agent", hold=45),   # late, long, agent first
            *call("c", at(3, 23, 59), "1002", rings=2, talk=30, first="caller", hold=75, choice="keep"),
            *call("d", at(4, 8), "1002", rings=7, talk=400, first="agent"),            # two alarms
            *call("e", at(6, 8), "1001", rings=1, talk=10, first="caller"),            # outside the window
        ]:
            await store.apply(e)
        # messages (the call records, their one store): one with audio, one empty, one outside
        for cid, t, recorded in (("b", at(3, 10, 3), True), ("c", at(4, 0, 0, 30), False), ("e", at(6, 8, 1), True)):
            await store.apply(CallEvent("message.recorded", cid, {"item": f"m-{cid}", "caller_number": "139003",
                                                                   "recorded": recorded, "held_seconds": 61.0}, at=t))
        # call-backs: one asked twice (merged) and placed twice (busy, connected), one still open
        requests = (("a", at(3, 9, 2), "139001"), ("b", at(3, 10, 2), "139001"), ("c", at(4, 0, 1), "139002"))
        for cid, t, number in requests:
            data = {"item": f"cb-{cid}", "caller_number": number}
            await store.apply(CallEvent("callback.requested", cid, data, at=t))
        for outcome, status, n in (("busy", "open", 1), ("connected", "done", 2)):
            attempt = await store.queue.start_attempt("cb-a", "1001", at(3, 11, n))
            assert attempt is not None
            await store.queue.finish_attempt("cb-a", attempt, outcome=outcome, status=status, attempts=n,
                                             next_attempt=None, burned=True, at=at(3, 11, n, 30))
        await store.close()

    asyncio.run(fill())
    return url


def report(db: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = main(["report", "--from", "2025-03-03", "--to", "2025-03-04", "--database", db,
                 "--timezone", "Asia/Shanghai", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_json_figures(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = json.loads(report(db, capsys, "--format", "json"))
    assert (r["from"], r["to"], r["timezone"]) == ("2025-03-03", "2025-03-04", "Asia/Shanghai")
    t = r["totals"]
    assert (t["calls"], t["answered"], t["within_three"], t["service_level"]) == (4, 4, 2, 0.5)
    assert (t["alarms"], t["holds"], t["agent_first_hangups"], t["long_calls"]) == (3, 2, 2, 2)
    agents = {a["agent"]: a for a in r["agents"]}
    assert (agents["1001"]["answered"], agents["1001"]["service_level"], agents["1001"]["max_rings"]) == (2, 0.5, 4)
    assert (agents["1002"]["alarms_warning"], agents["1002"]["alarms_critical"]) == (1, 1)
    assert (agents["1001"]["agent_first_hangups"], agents["1001"]["long_calls"]) == (1, 1)
    assert agents["1001"]["hold_seconds"] == 45.0
    days = {d["day"]: d for d in r["days"]}
    assert set(days) == {"2025-03-03", "2025-03-04"}  # 23:59 local is still the 3rd
    assert (days["2025-03-03"]["calls"], days["2025-03-03"]["service_level"]) == (3, round(2 / 3, 4))
    assert (days["2025-03-04"]["agent_first_hangups"], days["2025-03-04"]["long_calls"]) == (1, 1)
    assert r["rings_to_answer"]["1"] == 1 and r["rings_to_answer"]["4"] == 1 and r["rings_to_answer"]["7"] == 1
    assert r["hold_durations"] == {"0-30": 0, "30-60": 1, "60-90": 1, "90-120": 0, "120+": 0}
    assert r["hold_choices"] == {"keep": 1, "message": 0, "callback": 0, "none": 0}  # the 45-s hold had none
    assert (t["callbacks"], t["callbacks_done"]) == (2, 1)
    assert (t["messages"], t["messages_recorded"]) == (2, 1)
    assert r["callbacks"] == {"requested": 2, "requests": 3, "status": {"done": 1, "open": 1},
                              "attempts": {"busy": 1, "connected": 1}, "customer_attempts": 2}


def test_long_call_limit_is_configurable(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = json.loads(report(db, capsys, "--format", "json", "--long-call", "100"))
    assert r["totals"]["long_calls"] == 3 and r["long_call_seconds"] == 100


def test_the_thresholds_are_the_configurations(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The labels and the long-call limit come from the configuration, not from the code."""
    cfg = tmp_path / "ivr.toml"
    cfg.write_text("[rings]\nwarn_rings = 2\ncritical_rings = 5\n[hold]\nchoices_after = 90\n"
                   "[http]\nlong_call_seconds = 45\n")
    r = json.loads(report(db, capsys, "--format", "json", "--config", str(cfg)))
    assert (r["warn_rings"], r["critical_rings"], r["hold_limit"], r["long_call_seconds"]) == (2, 5, 90, 45)
    by_flag = json.loads(report(db, capsys, "--format", "json", "--long-call", "45"))
    assert r["totals"]["long_calls"] == by_flag["totals"]["long_calls"] > 0  # as --long-call 45 counts them
    page = report(db, capsys, "--config", str(cfg))
    assert "Answered within 2 rings" in page and "Alarms (5)" in page and "≤ 2 rings" in page
    assert "within 3" not in page.lower() and "≤ 3" not in page
    default = report(db, capsys)
    assert "Answered within 3 rings" in default and "Alarms (6)" in default  # the sections' defaults


def test_csv_sections(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.reader(io.StringIO(report(db, capsys, "--format", "csv"))))
    agent_rows = [r for r in rows if r and r[0] == "agent"]
    assert [r[1] for r in agent_rows] == ["1001", "1002"]
    header = rows[0]
    assert header[:5] == ["section", "agent", "name", "answered", "within_three"]
    assert [r[1] for r in rows if r and r[0] == "day"] == ["2025-03-03", "2025-03-04"]
    assert ["hold_seconds", "60-90", "1"] in rows and ["rings_to_answer", "7", "1"] in rows
    assert ["hold_choice", "keep", "1"] in rows and ["hold_choice", "none", "0"] in rows


def test_html_is_one_page_with_charts(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    report(db, capsys, "--out", str(out))
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 6 and "Call-backs done" in page
    assert "Held callers&#x27; choice at the limit" in page
    assert "Rings to answer" in page and "Hold durations" in page and "Agent-first hang-ups" in page
    assert "<script" not in page and "http" not in page.split("</style>")[1]  # self-contained
    assert ">50 %<" in page  # answered within three rings, overall


def test_bad_arguments(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--from", "2025-03-04", "--to", "2025-03-03", "--database", db,
                 "--timezone", "UTC"]) == 2
    assert "before --from" in capsys.readouterr().err
    assert main(["report", "--from", "2025-03-03", "--to", "2025-03-03", "--database", db,
                 "--timezone", "Mars/Olympus"]) == 2
    assert "unknown time zone" in capsys.readouterr().err
    assert main(["report", "--from", "2025-03-03", "--to", "2025-03-03", "--database", "mysql://x",
                 "--timezone", "UTC"]) == 2
    assert "unsupported database URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--from", "March", "--to", "2025-03-03"])
    assert "not a date" in capsys.readouterr().err


def test_hold_chart_marks_every_bucket_that_can_hold_a_hold_over_the_limit(
        db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With [hold] choices_after = 45 the 30-60 bucket holds holds over the limit (46-59 s):
    it is marked, as 60-90 and above are; 0-30 is not."""
    cfg = tmp_path / "ivr.toml"
    cfg.write_text("[hold]\nchoices_after = 45\n")
    page = report(db, capsys, "--config", str(cfg))
    chart = page[page.index('aria-label="Hold durations'):]
    chart = chart[:chart.index("</svg>")]
    marked = set(re.findall(r'class="b hot"><title>([^<]+?) s:', chart))
    assert marked == {"30-60", "60-90", "90-120", "120+"}, marked
