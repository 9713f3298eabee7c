"""The call-back scheduler's machine (ivr/rules/callback.py): place in line, agents,
business hours and the caller's window, retries with backoff, whose attempt is used."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.rules.callback import (
    AGENT_OUTCOMES,
    CUSTOMER_OUTCOMES,
    OUTCOMES,
    Callback,
    CallbackPolicy,
    Hours,
    after_attempt,
    expired,
    parse_span,
    parse_window,
    pick,
    plan_window,
    window_for_key,
    window_menu,
    window_said_back,
)

TZ = ZoneInfo("Asia/Shanghai")
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=TZ)  # a Tuesday
T = NOON.timestamp()
POLICY = CallbackPolicy(max_attempts=3, backoff=(60.0, 300.0), agent_retry=30.0)


def cb(id: str, at: float, **kw: Any) -> Callback:
    return Callback(id=id, phone="139" + id, requested_at=at, next_attempt=kw.pop("next_attempt", at),
                    last_request=at, **kw)


def test_first_in_line_gets_the_first_free_agent() -> None:
    a, b = cb("a", T - 100), cb("b", T - 200)
    got = pick([a, b], T, NOON, ["1001", "1002"], POLICY)
    assert got is not None and (got.callback.id, got.agent) == ("b", "1001")


def test_the_agent_who_held_is_preferred_and_a_busy_target_does_not_block() -> None:
    a = cb("a", T - 300, target="1003")  # for agent 1003, who is busy
    b = cb("b", T - 200, held_by="1002")
    got = pick([a, b], T, NOON, ["1001", "1002"], POLICY)
    assert got is not None and (got.callback.id, got.agent) == ("b", "1002")
    assert pick([a], T, NOON, [], POLICY) is None  # nobody free


def test_not_before_its_next_attempt_outside_hours_or_window() -> None:
    assert pick([cb("a", T - 10, next_attempt=T + 1)], T, NOON, ["1001"], POLICY) is None
    closed = CallbackPolicy(hours=Hours(13 * 60, 18 * 60))
    assert pick([cb("a", T - 10)], T, NOON, ["1001"], closed) is None
    weekend_only = CallbackPolicy(hours=Hours(0, 1440, frozenset({6, 7})))
    assert pick([cb("a", T - 10)], T, NOON, ["1001"], weekend_only) is None
    assert pick([cb("a", T - 10, best_time="14:00-16:00")], T, NOON, ["1001"], POLICY) is None
    assert pick([cb("a", T - 10, best_time="11:30-12:30")], T, NOON, ["1001"], POLICY) is not None


def test_today_expires_at_the_end_of_the_local_day() -> None:
    c = cb("a", T - 10)
    assert not expired(c, NOON)
    assert expired(c, datetime(2026, 12, 2, 0, 0, tzinfo=TZ))
    assert not expired(cb("b", T - 10, best_time="09:00-10:00"), datetime(2026, 12, 9, tzinfo=TZ))
    assert pick([c], T + 86400, datetime(2026, 12, 2, 12, tzinfo=TZ), ["1001"], POLICY) is None


def test_backoff_and_final_failure() -> None:
    c = cb("a", T)
    r1 = after_attempt(c, "no-answer", T, POLICY)
    assert (r1.status, r1.attempts, r1.next_attempt, r1.burned) == ("open", 1, T + 60, True)
    r2 = after_attempt(cb("a", T, attempts=1), "busy", T, POLICY)
    assert (r2.status, r2.attempts, r2.next_attempt) == ("open", 2, T + 300)
    r3 = after_attempt(cb("a", T, attempts=2), "machine", T, POLICY)
    assert (r3.status, r3.attempts, r3.next_attempt) == ("failed", 3, None)
    assert after_attempt(c, "connected", T, POLICY).status == "done"
    with pytest.raises(ValueError, match="whatever"):
        after_attempt(c, "whatever", T, POLICY)


def test_spans() -> None:
    assert parse_span("09:00-18:00") == (540, 1080)
    assert parse_span("00:00-24:00") == (0, 1440)
    for bad in ("9-18", "18:00-09:00", "25:00-26:00", "24:30-24:40", ""):
        with pytest.raises(ValueError):  # noqa: PT011 - each bad span has its own message
            parse_span(bad)


callbacks = st.lists(
    st.builds(lambda i, at, nxt, att, held: Callback(
        id=f"c{i}", phone=f"1{i}", requested_at=T - at, next_attempt=T - nxt, attempts=att, held_by=held,
        last_request=T - at),
        st.integers(0, 10**6), st.floats(0, 3600), st.floats(-600, 600), st.integers(0, 2),
        st.sampled_from(["", "1001", "1002", "1009"])),
    max_size=8, unique_by=lambda c: c.id)
free = st.lists(st.sampled_from(["1001", "1002", "1003"]), unique=True, max_size=3)


@given(callbacks, free)
def test_pick_is_the_first_due_in_line_and_a_free_agent(cbs: list[Callback], agents: list[str]) -> None:
    got = pick(cbs, T, NOON, agents, POLICY)
    due = sorted((c for c in cbs if c.next_attempt <= T), key=lambda c: (c.requested_at, c.id))
    if not agents or not due:
        assert got is None
        return
    assert got is not None
    assert got.callback == due[0] and got.agent in agents  # no target: anyone free serves the first
    if due[0].held_by in agents:
        assert got.agent == due[0].held_by


@given(st.integers(0, 5), st.sampled_from(sorted(OUTCOMES)), st.floats(0, 1e9))
def test_only_the_customers_outcomes_use_an_attempt(attempts: int, outcome: str, now: float) -> None:
    c = Callback("a", "139", 0.0, 0.0, attempts=attempts)
    r = after_attempt(c, outcome, now, POLICY)
    if outcome in AGENT_OUTCOMES:
        assert (r.status, r.attempts, r.burned, r.next_attempt) == ("open", attempts, False, now + 30.0)
    elif outcome in CUSTOMER_OUTCOMES:
        assert r.burned and r.attempts == attempts + 1
        assert (r.status == "failed") == (attempts + 1 >= POLICY.max_attempts)
        assert r.next_attempt is None if r.status == "failed" else r.next_attempt is not None and r.next_attempt >= now
    else:
        assert r.status == "done"


@given(st.lists(st.sampled_from(sorted(OUTCOMES)), max_size=30))
def test_a_call_back_ends_within_max_attempts_customer_failures(outcomes: list[str]) -> None:
    c = Callback("a", "139", 0.0, 0.0)
    status, used = "open", 0
    for o in outcomes:
        if status != "open":
            break
        r = after_attempt(c, o, 0.0, POLICY)
        c = Callback("a", "139", 0.0, r.next_attempt or 0.0, attempts=r.attempts)
        status, used = r.status, used + (o in CUSTOMER_OUTCOMES)
    assert used <= POLICY.max_attempts
    if status == "failed":
        assert used == POLICY.max_attempts


def test_next_opportunity_moves_into_hours_and_window() -> None:
    from ivr.rules.callback import next_opportunity

    office = CallbackPolicy(hours=Hours(9 * 60, 18 * 60, frozenset({1, 2, 3, 4, 5})))
    due = cb("a", T - 100, best_time="09:00-10:00")  # Tuesday noon: past today's window
    wed = datetime(2026, 12, 2, 9, 0, tzinfo=TZ).timestamp()
    assert next_opportunity(due, T, NOON, office) == wed
    assert next_opportunity(cb("b", T - 100), T, NOON, office) == T  # due now
    assert next_opportunity(cb("c", T - 100, next_attempt=T + 60), T, NOON, office) == T + 60
    fri_eve = datetime(2026, 12, 4, 19, 0, tzinfo=TZ)
    weekly = cb("d", T - 100, best_time="10:00-11:00")
    assert next_opportunity(weekly, fri_eve.timestamp(), fri_eve, office) == datetime(
        2026, 12, 7, 10, 0, tzinfo=TZ).timestamp()  # Monday
    late_today = cb("e", T - 100)  # today, but hours are over: never
    evening = datetime(2026, 12, 1, 19, 0, tzinfo=TZ)
    assert next_opportunity(late_today, evening.timestamp(), evening, office) is None
    assert next_opportunity(cb("f", T, best_time="19:00-20:00"), T, NOON, office) is None  # window outside hours


@given(callbacks, st.floats(0, 7 * 86400))
def test_the_next_opportunity_is_callable(cbs: list[Callback], later: float) -> None:
    from ivr.rules.callback import callable_now, next_opportunity

    office = CallbackPolicy(hours=Hours(9 * 60, 18 * 60, frozenset({1, 2, 3, 4, 5})))
    now = T + later
    local = datetime.fromtimestamp(now, TZ)
    for asked in cbs:
        c = Callback(asked.id, asked.phone, asked.requested_at, asked.next_attempt, best_time="any")
        at = next_opportunity(c, now, local, office)
        assert at is not None and at >= now
        assert callable_now(c, at, datetime.fromtimestamp(at, TZ), office)


def test_callbacks_config_is_checked(tmp_path: object) -> None:
    from pathlib import Path

    from ivr.config import load_config
    from ivr.errors import ConfigError

    path = Path(str(tmp_path)) / "ivr.toml"
    path.write_text('[callbacks]\nhours = "18:00-09:00"\ndays = [0, 8]\nbackoff = []\nmax_attempts = 0\n'
                    "agent_retry = -1.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    for expected in ("callbacks.hours (line 2): '18:00-09:00': the end must be after the start",
                     "callbacks.days[0] (line 3): must be between 1 and 7, got 0",
                     "callbacks.days[1] (line 3): must be between 1 and 7, got 8", "callbacks.backoff (line 4)",
                     "callbacks.max_attempts (line 5): must be greater than 0",
                     "callbacks.agent_retry (line 6): must be greater than 0"):
        assert expected in message, message
    assert sum(p.startswith("callbacks.days") for p in info.value.details["problems"]) == 2, message  # one per day
    path.write_text("[callbacks]\ndays = []\n")
    with pytest.raises(ConfigError, match=r"callbacks.days \(line 2\): at least one ISO weekday"):
        load_config(path, env={})
    path.write_text('[callbacks]\nenabled = true\nhours = "08:30-21:00"\nbackoff = [60.0, 300.0]\n')
    cfg = load_config(path, env={})
    from ivr.callbacks.model import CallbackSettings

    s = CallbackSettings.from_config(cfg.callbacks, cfg.switch, cfg.prompts, cfg.agents)
    assert (s.enabled, s.policy.hours.start, s.policy.hours.end, s.policy.backoff) == (True, 510, 1260, (60.0, 300.0))


def test_windows_parse_and_refuse() -> None:
    assert parse_window(" ASAP ").asap
    w = parse_window("tomorrow  09:00-12:00")
    assert (w.start, w.end, w.tomorrow) == (540, 720, True)
    for bad, why in (("09:30-12:00", "on the hour"), ("noon", "'asap', 'HH:00-HH:00'"),
                     ("12:00-09:00", "end must be after"), ("yesterday 09:00-10:00", "'asap'")):
        with pytest.raises(ValueError, match=why):
            parse_window(bad)


def test_a_window_is_the_next_one_and_said_back() -> None:
    morning = datetime(2026, 12, 1, 8, 0, tzinfo=TZ)
    evening = datetime(2026, 12, 1, 21, 0, tzinfo=TZ)
    afternoon = parse_window("14:00-20:00")
    today = plan_window(afternoon, morning)
    assert (today.best_time, today.day) == ("14:00-20:00", "today")
    assert today.not_before == datetime(2026, 12, 1, 14, 0, tzinfo=TZ).timestamp()
    inside = plan_window(afternoon, datetime(2026, 12, 1, 15, 30, tzinfo=TZ))
    assert inside.not_before == datetime(2026, 12, 1, 15, 30, tzinfo=TZ).timestamp()  # open now: at once
    late = plan_window(afternoon, evening)  # today's is over: tomorrow's
    assert (late.day, late.not_before) == ("tomorrow", datetime(2026, 12, 2, 14, 0, tzinfo=TZ).timestamp())
    tomorrow = plan_window(parse_window("tomorrow 09:00-12:00"), morning)
    assert (tomorrow.day, tomorrow.not_before) == ("tomorrow", datetime(2026, 12, 2, 9, 0, tzinfo=TZ).timestamp())
    assert window_said_back(tomorrow) == ["callback_will", "callback_tomorrow", "callback_from", "hour_9",
                                          "callback_to", "hour_12", "callback_end"]
    asap = plan_window(parse_window("asap"), evening)
    assert (asap.best_time, asap.not_before) == ("today", evening.timestamp())
    assert window_said_back(asap) == ["callback_confirm"]


def test_window_keys_and_menu() -> None:
    windows = [parse_window(w) for w in ("asap", "14:00-20:00", "tomorrow 09:00-12:00")]
    assert [window_for_key(windows, k) for k in ("1", "3")] == [windows[0], windows[2]]
    assert [window_for_key(windows, k) for k in (None, "", "0", "4", "*", "#", "12")] == [None] * 7
    menu = window_menu(windows, datetime(2026, 12, 1, 21, 0, tzinfo=TZ))
    assert menu[:4] == ["callback_when", "callback_asap", "callback_menu_press", "digit_1"]
    assert menu[4:6] == ["callback_tomorrow", "callback_from"], "after 20:00 the afternoon offered is tomorrow's"


def test_windows_config_is_checked(tmp_path: object) -> None:
    from pathlib import Path

    from ivr.config import load_config
    from ivr.errors import ConfigError

    path = Path(str(tmp_path)) / "ivr.toml"
    path.write_text('[callbacks]\nwindows = ["asap", "09:30-10:00"]\nwindow_timeout = 0\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "callbacks.windows[1]" in message and "on the hour" in message, message
    assert "callbacks.window_timeout" in message, message
    path.write_text("[callbacks]\nwindows = []\n")
    with pytest.raises(ConfigError, match="1 to 9 windows"):
        load_config(path, env={})


def test_a_queue_target_goes_to_a_free_member_of_that_queue() -> None:
    from ivr.rules.callback import choose_agent

    cb = Callback("q", "139", T, T, target="queue:support", held_by="1003")
    members = {"support": ["1002", "1003"], "sales": ["1001"]}
    assert choose_agent(cb, ["1001", "1002", "1003"], members) == "1003", "the agent who held, a member, first"
    assert choose_agent(cb, ["1001", "1002"], members) == "1002", "a free member, not any agent"
    assert choose_agent(cb, ["1001"], members) is None, "no member free: it waits"
    assert choose_agent(cb, ["1002"], {}) is None, "a queue the switch did not tell of: nobody"
    assert choose_agent(Callback("a", "139", T, T, held_by="1003"), ["1001", "1003"], members) == "1003"
