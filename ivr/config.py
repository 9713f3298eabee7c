"""The controller's configuration: one TOML file read into the typed sections of
:mod:`ivr.sections` (where every default lives), checked here.

``load_config(path)`` reads the file (``None``: all defaults), checks it and returns a
:class:`Config`; every problem found (unknown key, wrong type, bad time zone, unknown tone
zone, reversed holiday dates, missing prompt file, TOML syntax) is reported at once in one
:class:`~ivr.errors.ConfigError`, each line naming the key path (``agents[1].dial``) and,
where it can be found, the line in the file. ``deploy/ivr.toml`` shows every key.

Secrets (:data:`~ivr.config_checks.SECRETS`): ``[ami] secret`` comes from the environment variable
``IVR_AMI_SECRET``, else from the systemd credential ``ami-secret`` (the file
``$CREDENTIALS_DIRECTORY/ami-secret``, when systemd set that variable), else from
``secret_file``, else from the file itself; ``[http] token`` likewise from ``IVR_HTTP_TOKEN``,
credential ``http-token`` or ``token_file``; ``[alarms] webhook_secret`` from
``IVR_WEBHOOK_SECRET``, credential ``webhook-secret`` or ``webhook_secret_file``; ``[agi] key``
(the switch's FastAGI key) from ``IVR_AGI_KEY``, credential ``agi-key`` or ``key_file`` (a bare
key, or the switch's include with its ``IVR_AGI_KEY = ...`` line). The HTTP
token and the webhook secret need at least :data:`~ivr.config_checks.MIN_SECRET_LENGTH` visible ASCII
characters. :attr:`Config.warnings` lists secret-holding files that anyone can read.

Every number is checked (:data:`NUMBER_RANGES`): finite, and positive unless the table
allows zero or gives other bounds.

Relative paths (prompts, messages, secret files) are relative to the controller's working
directory. Empty prompt paths mean the catalogs shipped in the package and the data
directory's built prompts (:mod:`ivr.resources`), so the controller runs from any directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Moved to ivr/config_checks.py; the names this module used are kept.
from ivr.config_checks import AGI_KEY_MIN, SECRETS, advertise_problem, world_readable
from ivr.config_checks import Problems as _Problems
from ivr.config_checks import agi_key as _agi_key
from ivr.config_checks import check_secret as _check_secret
from ivr.config_checks import read_secret as _read_secret
from ivr.config_checks import validate_callbacks as _validate_callbacks
from ivr.errors import ConfigError
from ivr.greeting import holiday_ids, holiday_names, prompt_file
from ivr.rules.dialing import DIAL_RE, reroute_entry
from ivr.rules.rings import TONE_ZONE_CADENCES, Cadence
from ivr.sections import (
    AgentConfig,
    AgiConfig,
    AlarmsConfig,
    AmiConfig,
    CallbacksConfig,
    Config,
    DatabaseConfig,
    HoldConfig,
    HolidayAddition,
    HolidayOverride,
    HolidaysConfig,
    HttpConfig,
    PromptsConfig,
    RingsConfig,
    SilenceConfig,
    SwitchConfig,
    TransferConfig,
    UnclearConfig,
)

LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

__all__ = [
    "DIAL_RE",
    "AgentConfig",
    "AgiConfig",
    "AlarmsConfig",
    "AmiConfig",
    "CallbacksConfig",
    "Config",
    "DatabaseConfig",
    "HoldConfig",
    "HolidayAddition",
    "HolidayOverride",
    "HolidaysConfig",
    "HttpConfig",
    "PromptsConfig",
    "RingsConfig",
    "SilenceConfig",
    "SwitchConfig",
    "TransferConfig",
    "UnclearConfig",
    "key_lines",
    "load_config",
    "world_readable",
]

# -- reading ----------------------------------------------------------------------------


def key_lines(text: str) -> dict[str, int]:
    """Line number of each table and key of a TOML text, by key path (``agents[1].dial``).

    A line scanner, not a parser: good for error messages of ordinary files.
    """
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    prefix = ""
    key = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
    dotted = rf"{key}(?:\s*\.\s*{key})*"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := re.match(rf"^\[\[\s*({dotted})\s*\]\]", line):
            name = _join(m.group(1))
            index = counts[name] = counts.get(name, -1) + 1
            prefix = f"{name}[{index}]"
            lines.setdefault(prefix, number)
        elif m := re.match(rf"^\[\s*({dotted})\s*\]", line):
            prefix = _join(m.group(1))
            lines.setdefault(prefix, number)
        elif m := re.match(rf"^({dotted})\s*=", line):
            path = f"{prefix}.{_join(m.group(1))}" if prefix else _join(m.group(1))
            lines.setdefault(path, number)
    return lines


def _join(dotted: str) -> str:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+', dotted)
    return ".".join(p.strip("\"'") for p in parts)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, problems: _Problems) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, path, problems)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.add(path, f"expected a list, got {type(value).__name__}")
            return []
        return [_convert(v, args[0], f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(path, f"expected a table, got {type(value).__name__}")
            return {}
        return {str(k): _convert(v, args[1], f"{path}.{k}", problems) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is dt.date and isinstance(value, dt.datetime):
        problems.add(path, "expected a date (YYYY-MM-DD), got a date-time")
        return value.date()
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        problems.add(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return None
    return value


def _build(cls: Any, data: Any, path: str, problems: _Problems) -> Any:
    if not isinstance(data, dict):
        problems.add(path, f"expected a table, got {type(data).__name__}")
        data = {}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("path", "warnings")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        if key not in known:
            problems.add(sub, "unknown key")
            continue
        converted = _convert(value, hints[key], sub, problems)
        if converted is not None or value is None:
            kwargs[key] = converted
    for name, f in known.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            problems.add(f"{path}.{name}" if path else name, "missing required key")
            kwargs[name] = dt.date.min if hints[name] is dt.date else ""
    return cls(**kwargs)


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, check and return the configuration (``None``: defaults, secrets from ``env``)."""
    env = os.environ if env is None else env
    text, source = "", str(path) if path is not None else ""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", path=source) from exc
    problems = _Problems(key_lines(text), source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}", path=source, problems=[str(exc)]) from exc

    config = _build(Config, data, "", problems)
    config = _complete(config, data, env, problems)
    _validate(config, data, problems)
    if problems.items:
        head = f"{source or 'configuration'}: {len(problems.items)} problem(s)"
        raise ConfigError("\n  ".join([head, *problems.items]), path=source, problems=problems.items)
    warnings = list(config.warnings)
    if path is not None and world_readable(path) and any(
            s.key.split(".")[1] in data.get(s.key.split(".")[0], {}) for s in SECRETS):
        warnings.append(f"{path} holds a secret inline and is world-readable: chmod o-r {path}")
    for key, file in (("ami.secret_file", config.ami.secret_file),
                      ("http.token_file", config.http.token_file),
                      ("alarms.webhook_secret_file", config.alarms.webhook_secret_file),
                      ("agi.key_file", config.agi.key_file)):
        if file and world_readable(file):
            warnings.append(f"{key} {file} is world-readable: chmod o-r {file}")
    return dataclasses.replace(config, path=source, warnings=warnings)


def _complete(config: Config, data: dict[str, Any], env: Mapping[str, str],
              problems: _Problems) -> Config:
    """Defaults that depend on other keys, and secrets."""
    switch = config.switch
    if not switch.languages:
        switch = dataclasses.replace(switch, languages=[switch.language])
    agents = [a if a.dial else dataclasses.replace(a, dial=f"PJSIP/{a.number}") for a in config.agents]
    ami_secret, http_token, webhook_secret, agi_key = (_read_secret(config, s, env, problems) for s in SECRETS)
    _check_secret(*http_token, "the HTTP token", problems)
    _check_secret(*webhook_secret, "the webhook secret", problems)
    if config.alarms.webhook_url and not webhook_secret[0]:
        problems.add("alarms.webhook_url", "the webhook needs a signing secret: set IVR_WEBHOOK_SECRET, "
                     "the credential webhook-secret or alarms.webhook_secret_file")
    ami = dataclasses.replace(config.ami, secret=ami_secret[0])
    agi = dataclasses.replace(config.agi, key=_agi_key(*agi_key, problems))
    http = dataclasses.replace(config.http, token=http_token[0])
    alarms = dataclasses.replace(config.alarms, webhook_secret=webhook_secret[0])
    return dataclasses.replace(config, switch=switch, agents=agents, ami=ami, agi=agi, http=http, alarms=alarms)


def _validate(config: Config, data: dict[str, Any], problems: _Problems) -> None:
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
    _validate_numbers(config, "", problems)
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
    if config.hold.announce and config.hold.choices_after > 300:
        add("hold.choices_after", "the hold announcement can promise at most five minutes: "
            "set choices_after <= 300 or hold.announce = false")
    if config.alarms.webhook_url and not re.match(r"^https?://", config.alarms.webhook_url):
        add("alarms.webhook_url", "must be an http:// or https:// URL")
    _validate_database(config.database, add)
    _validate_cluster(config, add)
    _validate_callbacks(config.callbacks, add)
    _validate_holidays(config, problems)


# Bounds of numeric settings, by key path (list items as "[]"): (lowest, highest), both
# allowed. Any int or float setting not listed must be finite and greater than zero.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "ami.port": (1, 65535),
    "agi.port": (1, 65535),
    "http.port": (1, 65535),
    "cluster.forward_timeout": (0.1, 60),
    "cluster.claim_connections": (1, 64), "cluster.claim_timeout": (0.05, 10),
    "rings.on_ms": (0, 60_000),
    "rings.off_ms": (0, 60_000),
    "alarms.webhook_retries": (0, 100),
    "alarms.webhook_queue": (1, 1_000_000),
    "holidays.overrides[].year": (1900, 2200),
    "unclear.clear_threshold": (1, 32767),
    "callbacks.live_threshold": (1, 32767),
    "callbacks.live_min_word_ms": (0, 5000),
    "callbacks.agent_reasks": (0, 20), "callbacks.agent_reask_interval": (0.2, 10),
}


def _validate_numbers(obj: Any, path: str, problems: _Problems) -> None:
    """Check every int and float setting of a config dataclass (recursively) against
    :data:`NUMBER_RANGES`; one not listed must be finite and greater than 0."""
    for f in dataclasses.fields(obj):
        value, sub = getattr(obj, f.name), f"{path}.{f.name}" if path else f.name
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{sub}[{i}]" if isinstance(value, list) else sub
            if dataclasses.is_dataclass(item):
                _validate_numbers(item, where, problems)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                _check_number(item, where, problems)


def _check_number(value: float, path: str, problems: _Problems) -> None:
    bounds = NUMBER_RANGES.get(re.sub(r"\[\d+\]", "[]", path))
    if not math.isfinite(value):
        problems.add(path, f"must be a finite number, got {value}")
    elif bounds is None and value <= 0:
        problems.add(path, f"must be greater than 0, got {value}")
    elif bounds is not None and not bounds[0] <= value <= bounds[1]:
        problems.add(path, f"must be between {bounds[0]} and {bounds[1]}, got {value}")

def _validate_database(db: DatabaseConfig, add: Any) -> None:
    if not re.match(r"^(sqlite|postgres(ql)?)://", db.url):
        add("database.url", "unsupported database URL (sqlite:///... or postgresql://...)")
    for key in ("timeout", "connect_timeout", "retry_initial", "retry_max", "spool_max_mb", "queue_size"):
        value = getattr(db, key)
        if value is not None and value <= 0:
            add(f"database.{key}", f"must be positive, got {value}")
    if 0 < db.retry_max < db.retry_initial:
        add("database.retry_max", f"must be at least retry_initial ({db.retry_initial}), got {db.retry_max}")


NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _validate_cluster(config: Config, add: Any) -> None:
    c = config.cluster
    if not NODE_RE.match(c.switch):  # a name on every record, even without a cluster
        add("cluster.switch", f"1-63 letters, digits, '.', '_' or '-', got {c.switch!r}")
    if c.advertise and (problem := advertise_problem(c.advertise)):
        add("cluster.advertise", problem)
    if not c.node:
        return
    for key in ("node",):
        if not NODE_RE.match(getattr(c, key)):
            add(f"cluster.{key}", f"1-63 letters, digits, '.', '_' or '-', got {getattr(c, key)!r}")
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
