"""The checks of the configuration's values that look across keys or outside the file
(:func:`check_switch`: time zone, tone zone, languages and their prompt files;
:func:`check_sections`: agents, rings, transfer patterns, the AGI key, unclear, hold,
alarms, database, cluster timing, call-backs, holidays). The loader (:mod:`ivr.config`)
runs them around its check of every number."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.config_checks import AGI_KEY_MIN, advertise_problem
from ivr.config_checks import Problems as _Problems
from ivr.config_checks import validate_callbacks as _validate_callbacks
from ivr.greeting import holiday_ids, holiday_names, prompt_file
from ivr.rules.dialing import DIAL_RE, MOH_CLASS, reroute_entry
from ivr.rules.rings import TONE_ZONE_CADENCES, Cadence
from ivr.sections import Config, DatabaseConfig, HolidayAddition, HolidayOverride

LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def check_switch(config: Config, data: dict[str, Any], problems: _Problems) -> None:
    """The switch: time zone, tone zone, languages and their prompt files."""
    add = problems.add
    sw = config.switch
    try:
        ZoneInfo(sw.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        add("switch.timezone", f"unknown time zone {sw.timezone!r} (e.g. Asia/Shanghai)")
    if sw.indications:
        try:
            Cadence.from_indications(Path(sw.indications).read_text(encoding="utf-8"), sw.tone_zone)
        except OSError as exc:
            add("switch.indications", f"cannot read {sw.indications}: {exc.strerror or exc}")
        except KeyError:
            add("switch.tone_zone", f"tone zone {sw.tone_zone!r} has no ringcadence in {sw.indications}")
    elif sw.tone_zone.lower() not in TONE_ZONE_CADENCES:
        add("switch.tone_zone", f"unknown tone zone {sw.tone_zone!r} "
            f"(known: {', '.join(sorted(TONE_ZONE_CADENCES))}; or set switch.indications)")
    for i, lang in enumerate([sw.language, *sw.languages]):
        if not LANG_RE.match(lang):
            add("switch.language" if i == 0 else f"switch.languages[{i - 1}]", f"bad language tag {lang!r}")
    if sw.language not in sw.languages:
        add("switch.languages", f"must include switch.language {sw.language!r}")
    given_prompts = "prompts" in data or "languages" in data.get("switch", {})
    if given_prompts:
        for lang in sw.languages:
            file = prompt_file(config, lang)
            if not file.is_file():
                add("prompts.source", f"prompt file {file} does not exist (language {lang})")


def check_sections(config: Config, problems: _Problems) -> None:
    """Agents, rings, transfer, AGI key, unclear, hold, alarms, database, cluster,
    call-backs, holidays."""
    add = problems.add
    seen: set[str] = set()
    for i, agent in enumerate(config.agents):
        if not agent.number or not (str(agent.number).isascii() and str(agent.number).isdigit()):
            add(f"agents[{i}].number", f"agent number must be digits, got {agent.number!r}")
        if agent.number in seen:
            add(f"agents[{i}].number", f"duplicate agent number {agent.number!r}")
        seen.add(agent.number)
        if not DIAL_RE.match(agent.dial):
            add(f"agents[{i}].dial", f"not an Asterisk dial string: {agent.dial!r} (e.g. PJSIP/1001)")
    r = config.rings
    if (r.on_ms is None) != (r.off_ms is None):
        add("rings.on_ms" if r.on_ms is None else "rings.off_ms", "set both on_ms and off_ms, or neither")
    elif r.on_ms is not None and r.on_ms >= 0 and (r.off_ms or 0) >= 0 and r.on_ms + (r.off_ms or 0) <= 0:
        add("rings.on_ms", "cadence must be non-negative with a positive period")
    if r.warn_rings > 0 and 0 < r.critical_rings < r.warn_rings:
        add("rings.critical_rings", "need 0 < warn_rings <= critical_rings")
    if r.reroute_target:
        try:
            reroute_entry(r.reroute_target, config.agents)
        except ValueError as exc:
            add("rings.reroute_target", str(exc))
    for i, pattern in enumerate(config.transfer.allow_numbers):
        if not pattern:
            add(f"transfer.allow_numbers[{i}]", "empty pattern (it would allow no number; remove it)")
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            add(f"transfer.allow_numbers[{i}]", f"not a valid regular expression {pattern!r}: {exc}")
    a = config.agi
    if a.key and (len(a.key) < AGI_KEY_MIN or not re.fullmatch(r"[A-Za-z0-9_-]+", a.key)):
        add("agi.key", f"the FastAGI key must be at least {AGI_KEY_MIN} characters of A-Z a-z 0-9 _ - "
            "(it travels in the AGI URI; generate one with: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))')")
    u = config.unclear
    if u.clear_min_ms >= u.clear_max_ms:
        add("unclear.clear_max_ms", f"must be more than clear_min_ms ({u.clear_min_ms}), got {u.clear_max_ms}")
    if not MOH_CLASS.fullmatch(config.hold.moh_class):
        add("hold.moh_class", "a music-on-hold class name of 1-80 characters A-Z a-z 0-9 _ - "
            f"(as in musiconhold.conf), got {config.hold.moh_class[:80]!r}")
    if config.hold.announce and config.hold.choices_after > 300:
        add("hold.choices_after", "the hold announcement can promise at most five minutes: "
            "set choices_after <= 300 or hold.announce = false")
    if config.alarms.webhook_url and not re.match(r"^https?://", config.alarms.webhook_url):
        add("alarms.webhook_url", "must be an http:// or https:// URL")
    _validate_database(config.database, add)
    _validate_cluster(config, add)
    _validate_callbacks(config.callbacks, add)
    _validate_holidays(config, problems)


TAKEOVER_WINDOW = 1.6  # s: lease_ttl + poll_interval at most (README "Controller pairs")


def _validate_database(db: DatabaseConfig, add: Any) -> None:
    if not re.match(r"^(sqlite|postgres(ql)?)://", db.url):
        add("database.url", "unsupported database URL (sqlite:///... or postgresql://...)")
    if 0 < db.retry_max < db.retry_initial:
        add("database.retry_max", f"must be at least retry_initial ({db.retry_initial}), got {db.retry_max}")


NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _validate_cluster(config: Config, add: Any) -> None:
    c = config.cluster
    # The switch's name is on every record, even without a cluster; a node's, in a cluster.
    for key, name in (("switch", c.switch), ("node", c.node)):
        if (name or key == "switch") and not NODE_RE.match(name):
            add(f"cluster.{key}", f"1-63 letters, digits, '.', '_' or '-', got {name!r}")
    if c.advertise and (problem := advertise_problem(c.advertise)):
        add("cluster.advertise", problem)
    if not c.node:
        return
    if not re.match(r"^postgres(ql)?://", config.database.url):
        add("database.url", "[cluster] needs the PostgreSQL database the nodes share (postgresql://...)")
    # The timing argument (README "Controller pairs"): a leader stops acting `margin` s
    # before its lease can expire, and renews often enough to survive a lost renewal.
    if c.margin >= c.lease_ttl:
        add("cluster.margin", f"must be less than lease_ttl ({c.lease_ttl}), got {c.margin}")
    if c.renew_interval * 2 > c.lease_ttl - c.margin:
        add("cluster.renew_interval", f"must be at most (lease_ttl - margin) / 2 "
            f"({(c.lease_ttl - c.margin) / 2:g}), got {c.renew_interval}")
    if c.poll_interval > c.lease_ttl:
        add("cluster.poll_interval", f"must be at most lease_ttl ({c.lease_ttl}), got {c.poll_interval}")
    # A takeover lasts up to lease_ttl + poll_interval plus one query; the switch's [ivr-agi]
    # asks the FastAGI list again for 2 s (three passes 1 s apart) before a call goes to its
    # fallback, so the takeover must fit in that window, with room for the query and the new
    # leader's first answer.
    elif c.lease_ttl + c.poll_interval > TAKEOVER_WINDOW:
        add("cluster.lease_ttl", f"lease_ttl + poll_interval must be at most {TAKEOVER_WINDOW:g} s, the "
            f"takeover the switch's [ivr-agi] retries wait out (2 s), got {c.lease_ttl + c.poll_interval:g}")


def _validate_holidays(config: Config, problems: _Problems) -> None:
    h = config.holidays
    try:
        import holidays as holidays_lib  # noqa: PLC0415 - the country tables load slowly; only to validate

        if h.country.upper() not in holidays_lib.list_supported_countries():
            problems.add("holidays.country", f"country {h.country!r} unknown to the holidays library")
    except ImportError:  # pragma: no cover
        problems.add("holidays.country", "the holidays library is not installed")
    groups: tuple[tuple[str, Sequence[HolidayOverride | HolidayAddition]], ...] = (
        ("overrides", h.overrides), ("additions", h.additions))
    for kind, entries in groups:
        for i, entry in enumerate(entries):
            if not re.match(r"^[a-z][a-z0-9_]*$", entry.id):
                problems.add(f"holidays.{kind}[{i}].id", f"id must be lower_snake_case, got {entry.id!r}")
            if entry.start > entry.end:
                problems.add(f"holidays.{kind}[{i}].end",
                             f"end {entry.end} is before start {entry.start}")
    known = holiday_ids(config)
    for kind, ids in (("disabled", h.disabled), ("overrides", [o.id for o in h.overrides])):
        for i, hid in enumerate(ids):
            if hid not in known:
                key = f"holidays.{kind}[{i}]" + (".id" if kind == "overrides" else "")
                problems.add(key, f"unknown holiday id {hid!r} (known: {', '.join(known)})")
    for hid in holiday_names(config):
        for lang in config.switch.languages:
            if lang not in h.texts.get(hid, {}) and not _prompt_has(config, lang, f"holiday_{hid}"):
                problems.add(f"holidays.names.{hid}", f"no greeting text for {lang} "
                             f"(add holidays.texts.{hid}.{lang} or holiday_{hid} to the prompts)")
    for i, entry in enumerate(h.additions):
        for lang in config.switch.languages:
            if lang in entry.text or _prompt_has(config, lang, f"holiday_{entry.id}"):
                continue
            problems.add(f"holidays.additions[{i}].text",
                         f"no greeting text for {lang} (add text.{lang} or holiday_{entry.id} to the prompts)")


def _prompt_has(config: Config, lang: str, prompt_id: str) -> bool:
    """Whether the language's prompt file has ``prompt_id`` (True when unreadable)."""
    try:
        with open(prompt_file(config, lang), "rb") as f:
            return prompt_id in tomllib.load(f).get("prompts", {})
    except (OSError, tomllib.TOMLDecodeError):
        return True  # cannot tell: a missing prompt file is reported on its own
