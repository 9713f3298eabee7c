"""R2: greeting by time of day and holiday, over 2024-2035."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import pytest

from ivr.cli import main
from ivr.config import Config, load_config
from ivr.greeting import choose_greeting, greeting_periods, holiday_on
from tests import present

SHANGHAI = ZoneInfo("Asia/Shanghai")
D = dt.date


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(None)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ivr.toml"
    path.write_text(text, encoding="utf-8")
    return path


# Published dates (first day of the festival). Each is also checked against the library.
SPRING_FESTIVAL = {2024: D(2024, 2, 10), 2025: D(2025, 1, 29), 2026: D(2026, 2, 17),
                   2027: D(2027, 2, 6), 2028: D(2028, 1, 26), 2030: D(2030, 2, 3),
                   2035: D(2035, 2, 8)}
MID_AUTUMN = {2024: D(2024, 9, 17), 2025: D(2025, 10, 6), 2026: D(2026, 9, 25),
              2027: D(2027, 9, 15), 2030: D(2030, 9, 12), 2035: D(2035, 9, 16)}


@pytest.mark.parametrize(("table", "name"), [(SPRING_FESTIVAL, "Chinese New Year (Spring Festival)"),
                                             (MID_AUTUMN, "Mid-Autumn Festival")])
def test_published_dates_agree_with_library(table: dict[int, dt.date], name: str) -> None:
    for year, day in table.items():
        cal = holidays.country_holidays("CN", years=[year], language="en_US")
        first = min(d for d, n in cal.items() if n.split("; ")[0] == name or name in n.split("; "))
        assert first == day, year


@pytest.mark.parametrize(("year", "day"), sorted(SPRING_FESTIVAL.items()))
def test_spring_festival(config: Config, year: int, day: dt.date) -> None:
    at = dt.datetime.combine(day, dt.time(9, 30), SHANGHAI)
    g = choose_greeting(at, config)
    assert g.holiday == "spring_festival"
    assert g.prompts == ["good_morning", "holiday_spring_festival", "holiday_welcome"]
    assert g.text == "早上好!新年好!Example客服中心,请问有什么可以帮您?"
    periods = [p for p in greeting_periods(year, config) if p.holiday == "spring_festival"]
    assert len(periods) == 1 and day in periods[0]


@pytest.mark.parametrize(("year", "day"), sorted(MID_AUTUMN.items()))
def test_mid_autumn(config: Config, year: int, day: dt.date) -> None:
    g = choose_greeting(dt.datetime.combine(day, dt.time(15, 0), SHANGHAI), config)
    assert (g.holiday, g.daypart) == ("mid_autumn", "day")
    assert g.prompts == ["holiday_mid_autumn", "holiday_welcome"]
    assert g.text == "中秋节快乐!Example客服中心,请问有什么可以帮您?"


@pytest.mark.parametrize("year", range(2024, 2036))
def test_every_year_has_the_five_holidays(config: Config, year: int) -> None:
    periods = greeting_periods(year, config)
    assert {p.holiday for p in periods} == {
        "new_year", "spring_festival", "labour_day", "mid_autumn", "national_day"}
    for p in periods:
        assert p.start <= p.end and p.days <= 10
    # 2031-10-01 is Mid-Autumn and National Day at once: the festival day greets Mid-Autumn
    expected = "mid_autumn" if year == 2031 else "national_day"
    assert present(holiday_on(D(year, 10, 1), config)).holiday == expected
    assert present(holiday_on(D(year, 10, 2), config)).holiday == "national_day"
    assert present(holiday_on(D(year, 5, 1), config)).holiday == "labour_day"
    assert present(holiday_on(D(year, 1, 1), config)).holiday == "new_year"
    assert holiday_on(D(year, 3, 15), config) is None


@pytest.mark.parametrize(
    ("year", "holiday", "start", "end"),
    [  # official notices the library reproduces, weekends and substitute days included
        (2024, "spring_festival", D(2024, 2, 10), D(2024, 2, 17)),
        (2024, "national_day", D(2024, 10, 1), D(2024, 10, 7)),
        (2024, "new_year", D(2023, 12, 30), D(2024, 1, 1)),
        (2025, "spring_festival", D(2025, 1, 28), D(2025, 2, 4)),  # eve counted
        (2025, "labour_day", D(2025, 5, 1), D(2025, 5, 5)),
        (2026, "spring_festival", D(2026, 2, 15), D(2026, 2, 23)),
        (2026, "national_day", D(2026, 10, 1), D(2026, 10, 7)),
    ],
)
def test_official_periods(config: Config, year: int, holiday: str, start: dt.date,
                          end: dt.date) -> None:
    assert [(p.start, p.end) for p in greeting_periods(year, config) if p.holiday == holiday] == [
        (start, end)]


def test_shared_run_2025(config: Config) -> None:
    """1-8 October 2025: National Day 1-3, Mid-Autumn 6; the days between follow."""
    got = {d: present(holiday_on(D(2025, 10, d), config)).holiday for d in range(1, 9)}
    assert got == {1: "national_day", 2: "national_day", 3: "national_day", 4: "national_day",
                   5: "national_day", 6: "mid_autumn", 7: "mid_autumn", 8: "mid_autumn"}
    assert holiday_on(D(2025, 10, 9), config) is None
    # 2028-10-03 is both: the festival day itself greets Mid-Autumn
    assert present(holiday_on(D(2028, 10, 3), config)).holiday == "mid_autumn"


@pytest.mark.parametrize(
    ("clock", "daypart", "first"),
    [(dt.time(0, 0), "morning", "good_morning"), (dt.time(11, 59, 59), "morning", "good_morning"),
     (dt.time(12, 0), "day", "hello"), (dt.time(23, 59, 59), "day", "hello")],
)
def test_morning_boundary(config: Config, clock: dt.time, daypart: str, first: str) -> None:
    g = choose_greeting(dt.datetime.combine(D(2027, 3, 10), clock, SHANGHAI), config)
    assert (g.holiday, g.daypart, g.prompts) == (None, daypart, [first, "welcome"])


def test_time_zone_decides(tmp_path: Path, config: Config) -> None:
    instant = dt.datetime(2027, 3, 10, 3, 30, tzinfo=dt.UTC)  # 11:30 Shanghai, 04:30 Paris
    assert choose_greeting(instant, config).daypart == "morning"
    instant = dt.datetime(2027, 3, 10, 4, 30, tzinfo=dt.UTC)  # 12:30 Shanghai, 23:30 New York
    assert choose_greeting(instant, config).daypart == "day"
    ny = load_config(write(tmp_path, '[switch]\ntimezone = "America/New_York"\n'))
    g = choose_greeting(dt.datetime(2027, 1, 1, 4, 30, tzinfo=dt.UTC), ny)
    assert (g.holiday, g.daypart, present(g.at).date()) == (None, "day", D(2026, 12, 31))
    g = choose_greeting(dt.datetime(2027, 1, 1, 4, 30, tzinfo=dt.UTC), config)
    assert (g.holiday, g.daypart) == ("new_year", "day")
    # naive: the configured zone
    assert present(choose_greeting(dt.datetime(2027, 3, 10, 11, 0), ny).at).tzinfo == ZoneInfo("America/New_York")


def test_english_and_company(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[switch]\ncompany = "ACME"\nlanguages = ["zh-CN", "en-US"]\n'))
    g = choose_greeting(dt.datetime(2027, 10, 2, 10, 0, tzinfo=SHANGHAI), cfg, "en-US")
    assert g.language == "en-US"
    assert g.text == "Good morning! Happy National Day! ACME customer service centre. How may I help you?"
    g = choose_greeting(dt.datetime(2027, 3, 2, 14, 0, tzinfo=SHANGHAI), cfg, "en-US")
    assert g.text == "Hello! ACME welcomes your call. How may I help you?"


OWN = """
[holidays]
disabled = ["labour_day"]

[[holidays.overrides]]
id = "national_day"
start = 2027-09-30
end = 2027-10-08

[[holidays.additions]]
id = "anniversary"
name = "Company anniversary"
start = 2027-06-18
end = 2027-06-19
yearly = true
text = { "zh-CN" = "周年庆快乐!", "en-US" = "Happy anniversary!" }
"""


def test_overrides_additions_disabled(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, OWN))
    periods = {(p.holiday, p.start, p.end, p.source) for p in greeting_periods(2027, cfg)}
    assert ("national_day", D(2027, 9, 30), D(2027, 10, 8), "override") in periods
    assert not any(p[0] == "labour_day" for p in periods)
    assert choose_greeting(dt.datetime(2027, 5, 1, 9, 0), cfg).holiday is None
    g = choose_greeting(dt.datetime(2027, 10, 8, 13, 0), cfg)
    assert g.holiday == "national_day"
    # 2026 keeps the library's National Day: the override is for 2027 only
    assert choose_greeting(dt.datetime(2026, 10, 8, 13, 0), cfg).holiday is None
    g = choose_greeting(dt.datetime(2030, 6, 19, 9, 0), cfg)
    assert g.prompts == ["good_morning", "holiday_anniversary", "holiday_welcome"]
    assert g.text == "早上好!周年庆快乐!Example客服中心,请问有什么可以帮您?"


def test_other_country_by_name(tmp_path: Path) -> None:
    text = """
[switch]
timezone = "America/New_York"
language = "en-US"

[holidays]
country = "US"
names = { independence_day = ["Independence Day"] }
texts = { independence_day = { "en-US" = "Happy Fourth of July!" } }
"""
    cfg = load_config(write(tmp_path, text))
    g = choose_greeting(dt.datetime(2027, 7, 5, 15, 0), cfg)  # 4 July 2027 is a Sunday
    assert g.holiday == "independence_day"
    assert g.text == "Happy Fourth of July! Example customer service centre. How may I help you?"
    assert {p.holiday for p in greeting_periods(2027, cfg)} == {"independence_day"}


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["greeting", "--at", "2027-02-06T09:30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["holiday"] == "spring_festival" and out["daypart"] == "morning"
    assert out["prompts"] == ["good_morning", "holiday_spring_festival", "holiday_welcome"]
    assert out["language"] == "zh-CN" and "新年好" in out["text"]
    assert main(["greeting", "--at", "2027-03-03T12:00", "--lang", "en-US"]) == 0
    assert "Hello! Example welcomes your call." in capsys.readouterr().out


def test_cli_calendar(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "2027"]) == 0
    out = capsys.readouterr().out
    assert "2027-02-05 .. 2027-02-10" in out and "spring_festival" in out
    assert main(["calendar", "2027", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
