"""Settings a careless or hostile admin could give (issue 13, item 7): short tokens, numbers
out of range, secrets through systemd credentials, and a unit file in step with the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ivr.config import NUMBER_RANGES, Config, load_config
from ivr.config_checks import MIN_SECRET_LENGTH, SECRETS
from ivr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GOOD = "0123456789abcdef-good"


def write(tmp_path: Path, text: str, name: str = "ivr.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value)


# -- tokens ------------------------------------------------------------------------------------

def test_a_short_http_token_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    conf = write(tmp_path, '[http]\nport = 8780\ntoken = "a"\n')
    assert "http.token (line 3): the HTTP token is 1 characters long; at least 16" in problems(conf)
    token = write(tmp_path, "short\n", "token")
    conf = write(tmp_path, f'[http]\ntoken_file = "{token}"\n')
    assert "http.token_file (line 2): the HTTP token is 5 characters long" in problems(conf)
    assert "IVR_HTTP_TOKEN: the HTTP token is 3 characters long" in problems(
        write(tmp_path, ""), {"IVR_HTTP_TOKEN": "abc"})
    assert "only visible ASCII" in problems(write(tmp_path, '[http]\ntoken = "with a space 0123456"\n'))
    assert load_config(write(tmp_path, f'[http]\ntoken = "{"x" * MIN_SECRET_LENGTH}"\n'), env={}).http.token


def test_the_webhook_needs_a_long_enough_signing_secret(tmp_path: Path) -> None:
    conf = write(tmp_path, '[alarms]\nwebhook_url = "https://example.invalid/hook"\n')
    assert "alarms.webhook_url (line 2): the webhook needs a signing secret" in problems(conf)
    assert "IVR_WEBHOOK_SECRET: the webhook secret is 2 characters long" in problems(
        conf, {"IVR_WEBHOOK_SECRET": "ab"})
    c = load_config(conf, env={"IVR_WEBHOOK_SECRET": GOOD})
    assert c.alarms.webhook_secret == GOOD


# -- numbers -----------------------------------------------------------------------------------

def numeric_settings() -> list[str]:
    """Every int and float key of the configuration's sections (lists of tables left out)."""
    out = []
    for section in dataclasses.fields(Config):
        default = getattr(Config(), section.name)
        if dataclasses.is_dataclass(default):
            for f in dataclasses.fields(default):
                if re.search(r"\b(int|float)\b", str(f.type)) and "list" not in str(f.type):
                    out.append(f"{section.name}.{f.name}")
    return out


def test_the_numeric_settings_are_all_found() -> None:
    found = numeric_settings()
    assert {"ami.ping_interval", "hold.reminder_interval", "alarms.webhook_queue", "alarms.webhook_retries",
            "rings.warn_rings", "silence.talk_threshold", "http.port", "alarms.webhook_deadline"} <= set(found)
    assert len(found) >= 25


@pytest.mark.parametrize("key", numeric_settings())
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf"])
def test_every_numeric_setting_is_checked(tmp_path: Path, key: str, value: str) -> None:
    section, name = key.split(".")
    lo, _hi = NUMBER_RANGES.get(key, (None, None))
    if value == "0" and lo == 0:
        return  # zero allowed here (retries, a cadence part)
    conf = write(tmp_path, f"# {key} = {value}\n[{section}]\n{name} = {value}\n")
    assert f"{key} (line 3): " in problems(conf)


def test_number_messages_say_what_is_allowed(tmp_path: Path) -> None:
    text = problems(write(tmp_path, "[alarms]\nwebhook_queue = 0\nwebhook_retries = -2\nwebhook_timeout = nan\n"
                                    "[hold]\nreminder_interval = -30\n[http]\nport = 70000\n"))
    for line in ["alarms.webhook_queue (line 2): must be between 1 and 1000000, got 0",
                 "alarms.webhook_retries (line 3): must be between 0 and 100, got -2",
                 "alarms.webhook_timeout (line 4): must be a finite number, got nan",
                 "hold.reminder_interval (line 6): must be greater than 0, got -30.0",
                 "http.port (line 8): must be between 1 and 65535, got 70000"]:
        assert line in text


def test_numbers_in_lists_of_tables_are_checked(tmp_path: Path) -> None:
    conf = write(tmp_path, "[[holidays.overrides]]\nid = \"national_day\"\nstart = 2027-10-01\n"
                           "end = 2027-10-08\nyear = -5\n")
    assert "holidays.overrides[0].year (line 5): must be between 1900 and 2200, got -5" in problems(conf)


def test_the_defaults_and_the_sample_pass_the_checks() -> None:
    load_config(None, env={})
    load_config(REPO / "deploy/ivr.toml", env={})


# -- systemd credentials and the unit file --------------------------------------------------------

def test_secrets_come_from_the_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    for s in SECRETS:
        (creds / s.credential).write_text(f"{s.credential}-from-systemd-0123\n")
    conf = write(tmp_path, '[alarms]\nwebhook_url = "https://example.invalid/hook"\n')
    c = load_config(conf, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert (c.ami.secret, c.http.token, c.alarms.webhook_secret) == (
        "ami-secret-from-systemd-0123", "http-token-from-systemd-0123", "webhook-secret-from-systemd-0123")
    c = load_config(conf, env={"CREDENTIALS_DIRECTORY": str(creds), "IVR_HTTP_TOKEN": GOOD})
    assert c.http.token == GOOD  # the environment first
    (creds / "http-token").unlink()
    token = write(tmp_path, "token-from-a-file-0123\n", "token")
    conf = write(tmp_path, f'[http]\ntoken_file = "{token}"\n')
    assert load_config(conf, env={"CREDENTIALS_DIRECTORY": str(creds)}).http.token == "token-from-a-file-0123"


def unit_settings(text: str) -> list[tuple[str, str]]:
    """(key, value) of the unit's settings; commented-out ones too (an admin may enable them)."""
    out = []
    for line in text.splitlines():
        if m := re.match(r"^#?([A-Z][A-Za-z]+)=(.*)$", line.strip()):
            out.append((m.group(1), m.group(2)))
    return out


def test_everything_the_unit_file_hands_over_is_read_by_the_controller(tmp_path: Path) -> None:
    text = (REPO / "deploy/ivr.service").read_text()
    settings = unit_settings(text)
    sources = "\n".join(p.read_text() for p in (REPO / "ivr").rglob("*.py"))
    for key, value in settings:
        if key == "Environment":
            name = value.strip('"').split("=", 1)[0]
            assert f'"{name}"' in sources, f"the unit sets {name}, which no code reads"
    creds = tmp_path / "creds"
    creds.mkdir()
    loaded = [value.split(":", 1)[0] for key, value in settings if key == "LoadCredential"]
    assert {"ami-secret", "http-token", "webhook-secret"} <= set(loaded)
    for name in loaded:
        (creds / name).write_text(f"{name}-value-0123456789\n")
    conf = write(tmp_path, '[alarms]\nwebhook_url = "https://example.invalid/hook"\n')
    c = load_config(conf, env={"CREDENTIALS_DIRECTORY": str(creds)})
    used = {c.ami.secret, c.http.token, c.alarms.webhook_secret, c.agi.key}
    for name in loaded:
        assert f"{name}-value-0123456789" in used, f"the unit loads credential {name}, which no code reads"
    # systemd expands neither ${CREDENTIALS_DIRECTORY} in ivr.toml nor does anything read *_FILE.
    assert not re.search(r"IVR_\w+_FILE", text)
    assert "${CREDENTIALS_DIRECTORY}" not in (REPO / "deploy/ivr.toml").read_text()
    assert "LimitNOFILE" not in text or re.search(r"^LimitNOFILE=\d+", text, re.MULTILINE)
