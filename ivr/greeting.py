"""R2 greeting by time of day and holiday, from the ``holidays`` library (never a date table).

Greeting periods
    For each holiday id, the library's days whose (English) name maps to it (``(observed)``
    days included) are the holiday's *named* days. A greeting period is the run of
    consecutive non-working days (``not is_working_day``: statutory days, substitute days
    off, weekends that are not make-up working days) around named days, so a year's period
    matches the official notice when the library knows it (2024 National Day: 1-7 October;
    2026 Spring Festival: 15-23 February). Within one run holding two holidays (2025:
    National Day 1-3 and Mid-Autumn 6 October, off 1-8), a named day greets its own holiday
    and the days between take the holiday of the nearest named day before them (days before
    the first named day take the first one). A day named for two holidays (2028-10-03,
    Mid-Autumn and National Day) greets the first in mapping order: mid_autumn.

    Spring Festival Eve counts: it belongs to spring_festival whenever the library lists it
    as a statutory day (from 2025 on), and "Happy New Year" is what callers hear that day.

    A period belongs to the year of its first named day (New Year 2024 starts 2023-12-30).
    Config ``[holidays]`` can ``disable`` ids, ``override`` an id's period for one year (the
    yearly notice; replaces the library's periods of that id that year), ``add`` own
    holidays (fixed or ``yearly``), and map another ``country``'s holiday names to ids.
    Config-given periods win over library ones on the same day.

Time of day
    In ``[switch] timezone``: 00:00:00-11:59:59 is "morning" (good_morning), else "day".

A greeting is a list of prompt ids: ordinary [good_morning|hello, welcome]; holiday
[good_morning?, holiday_<id>, holiday_welcome]. ``text`` joins the prompt texts of the
language (``prompts/<lang>.toml``; an own holiday's text comes from config) with
``{company}`` filled in.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from ivr.errors import ConfigError
from ivr.resources import prompts_source_dir
from ivr.sections import Config

CN_NAMES: dict[str, tuple[str, ...]] = {
    "new_year": ("New Year's Day",),
    "spring_festival": ("Chinese New Year (Spring Festival)", "Chinese New Year's Eve"),
    "labour_day": ("Labor Day",),
    "mid_autumn": ("Mid-Autumn Festival",),
    "national_day": ("National Day",),
}
MORNING_ENDS = dt.time(12, 0)
_QUALIFIER = re.compile(r"\s*\((?:observed|estimated)[^)]*\)", re.IGNORECASE)


@dataclass(frozen=True)
class Period:
    holiday: str
    name: str
    start: dt.date
    end: dt.date
    source: str = "library"  # library | override | addition

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day <= self.end

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True)
class Greeting:
    holiday: str | None
    daypart: str  # "morning" | "day"
    text: str
    prompts: list[str]
    language: str
    at: dt.datetime | None = None  # the instant, in the configured time zone

    def as_dict(self) -> dict[str, Any]:
        return {"holiday": self.holiday, "daypart": self.daypart, "text": self.text,
                "prompts": list(self.prompts), "language": self.language,
                "at": self.at.isoformat() if self.at else None}


def holiday_names(config: Config) -> dict[str, tuple[str, ...]]:
    """Holiday id -> library names: built in for CN, plus/else ``[holidays.names]``."""
    base = dict(CN_NAMES) if config.holidays.country.upper() == "CN" else {}
    base.update({k: tuple(v) for k, v in config.holidays.names.items()})
    return base


def holiday_ids(config: Config) -> list[str]:
    """Every holiday id the configuration knows (library-mapped and added)."""
    ids = list(holiday_names(config))
    ids += [a.id for a in config.holidays.additions if a.id not in ids]
    return ids


@functools.lru_cache(maxsize=32)
def _library(country: str, years: tuple[int, ...]) -> holidays_lib.HolidayBase:
    probe = holidays_lib.country_holidays(country)
    language = "en_US" if "en_US" in (probe.supported_languages or ()) else None
    return holidays_lib.country_holidays(country, years=years, language=language)


def _normal(name: str) -> str:
    return _QUALIFIER.sub("", name).strip()


@functools.lru_cache(maxsize=64)
def _library_periods(year: int, country: str, name_items: tuple[tuple[str, tuple[str, ...]], ...]
                     ) -> tuple[Period, ...]:
    """The library's periods of ``year`` (cached: walking three years of days off took
    ~7 ms, on every call, before; bench/controller_scale.py measured it)."""
    names = dict(name_items)
    if not names:
        return ()
    cal = _library(country.upper(), (year - 1, year, year + 1))
    by_name = {n: hid for hid, ns in names.items() for n in ns}
    order = list(names)
    titles = {hid: ns[0] if ns else hid for hid, ns in names.items()}
    periods: list[Period] = []
    day, last = dt.date(year - 1, 11, 1), dt.date(year + 1, 2, 28)
    while day <= last:
        if cal.is_working_day(day):
            day += dt.timedelta(days=1)
            continue
        run: list[dt.date] = []
        while day <= last and not cal.is_working_day(day):
            run.append(day)
            day += dt.timedelta(days=1)
        periods += _label_run(run, cal, by_name, order, year)
    return tuple(Period(p.holiday, titles[p.holiday], p.start, p.end) for p in periods)


def _label_run(run: list[dt.date], cal: Any, by_name: dict[str, str], order: list[str],
               year: int) -> list[Period]:
    """Label a run of non-working days with holiday ids; the periods of ``year``."""
    named: dict[dt.date, str] = {}
    for day in run:
        ids = {by_name[_normal(n)] for n in cal.get_list(day) if _normal(n) in by_name}
        if ids:
            named[day] = min(ids, key=order.index)
    if not named:
        return []
    labels: list[str] = []
    current = named[min(named)]
    for day in run:
        current = named.get(day, current)
        labels.append(current)
    periods: list[Period] = []
    start = 0
    for i in range(1, len(run) + 1):
        if i == len(run) or labels[i] != labels[start]:
            days = run[start:i]
            first_named = min(d for d in days if d in named)  # every chunk has one
            if first_named.year == year:
                periods.append(Period(labels[start], "", days[0], days[-1]))
            start = i
    return periods


def greeting_periods(year: int, config: Config) -> list[Period]:
    """Every greeting period of ``year`` (config overrides and additions applied), by start."""
    h = config.holidays
    periods = list(_library_periods(year, h.country, tuple(holiday_names(config).items())))
    overridden = {o.id for o in h.overrides if (o.year or o.start.year) == year}
    periods = [p for p in periods if p.holiday not in overridden]
    names = {p.holiday: p.name for p in periods}
    for o in h.overrides:
        if (o.year or o.start.year) == year:
            periods.append(Period(o.id, names.get(o.id, o.id), o.start, o.end, "override"))
    for a in h.additions:
        if a.yearly:
            try:
                start = a.start.replace(year=year)
                end = a.end.replace(year=year + (a.end.year - a.start.year))
            except ValueError:  # 29 February in a common year
                continue
        elif a.start.year != year:
            continue
        else:
            start, end = a.start, a.end
        periods.append(Period(a.id, a.name or a.id, start, end, "addition"))
    disabled = set(h.disabled)
    return sorted((p for p in periods if p.holiday not in disabled), key=lambda p: (p.start, p.holiday))


def holiday_on(day: dt.date, config: Config) -> Period | None:
    """The greeting period covering ``day`` (config-given periods first), or None."""
    candidates = [p for y in (day.year - 1, day.year, day.year + 1)
                  for p in greeting_periods(y, config) if day in p]
    candidates.sort(key=lambda p: p.source == "library")
    return candidates[0] if candidates else None


def daypart(local: dt.datetime | dt.time) -> str:
    t = local.time() if isinstance(local, dt.datetime) else local
    return "morning" if t < MORNING_ENDS else "day"


def prompt_file(config: Config, language: str) -> Path:
    return prompts_source_dir(config.prompts.source) / f"{language}.toml"


@functools.lru_cache(maxsize=16)
def _load_texts(path: str, mtime: float) -> dict[str, str]:
    with open(path, "rb") as f:
        return dict(tomllib.load(f).get("prompts", {}))


def prompt_texts(config: Config, language: str) -> dict[str, str]:
    path = prompt_file(config, language)
    try:
        return _load_texts(str(path), path.stat().st_mtime)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the prompt texts {path}: {exc}", path=str(path)) from exc


def _text(prompt_id: str, texts: dict[str, str], config: Config, language: str) -> str:
    if prompt_id in texts:
        return texts[prompt_id]
    hid = prompt_id.removeprefix("holiday_")
    for a in config.holidays.additions:
        if a.id == hid and language in a.text:
            return a.text[language]
    if language in config.holidays.texts.get(hid, {}):
        return config.holidays.texts[hid][language]
    raise ConfigError(f"no text for prompt {prompt_id!r} in language {language}",
                      prompt=prompt_id, language=language)


def choose_greeting(at: dt.datetime, config: Config, language: str | None = None) -> Greeting:
    """The greeting for a call at ``at`` (aware; naive means the configured time zone)."""
    tz = ZoneInfo(config.switch.timezone)
    local = at.replace(tzinfo=tz) if at.tzinfo is None else at.astimezone(tz)
    language = language or config.switch.language
    part = daypart(local)
    period = holiday_on(local.date(), config)
    if period is None:
        prompts = ["good_morning" if part == "morning" else "hello", "welcome"]
    else:
        prompts = (["good_morning"] if part == "morning" else []) + [
            f"holiday_{period.holiday}", "holiday_welcome"]
    texts = prompt_texts(config, language)
    text = "".join((_join_space(language) and f"{_text(p, texts, config, language)} ")
                   or _text(p, texts, config, language) for p in prompts).strip()
    return Greeting(period.holiday if period else None, part,
                    text.replace("{company}", config.switch.company), prompts, language, local)


def _join_space(language: str) -> bool:
    """Texts of languages written without spaces (zh, ja) are joined without one."""
    return language.split("-")[0].lower() not in ("zh", "ja", "ko", "th")
