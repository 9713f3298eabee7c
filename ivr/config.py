"""The controller's configuration: one TOML file read into the typed sections of
:mod:`ivr.sections` (where every default lives; the reading: :mod:`ivr.config_read`), checked
here (every number) and in :mod:`ivr.config_validate` (across keys).

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
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Moved to ivr/config_checks.py; the names this module used are kept.
from ivr.config_checks import SECRETS, world_readable
from ivr.config_checks import Problems as _Problems
from ivr.config_checks import agi_key as _agi_key
from ivr.config_checks import check_secret as _check_secret
from ivr.config_checks import read_secret as _read_secret
from ivr.config_read import build, key_lines
from ivr.config_validate import check_sections, check_switch
from ivr.errors import ConfigError
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

__all__ = [
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
    "load_config",
    "world_readable",
]

# -- loading (reading: ivr/config_read.py; the checks across keys: ivr/config_validate.py) --


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

    config = build(Config, data, "", problems)
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
    """The switch, every number, the other sections: the problems in that order."""
    check_switch(config, data, problems)
    _validate_numbers(config, "", problems)
    check_sections(config, problems)


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
    "callbacks.days[]": (1, 7),  # ISO weekdays, Monday = 1
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
