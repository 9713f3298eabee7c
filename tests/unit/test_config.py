"""Configuration: defaults, every problem reported with key path and line, secrets."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.config import Config, load_config
from ivr.config_read import key_lines
from ivr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "ivr.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_defaults() -> None:
    c = load_config(None, env={})
    assert (c.switch.timezone, c.switch.tone_zone, c.switch.company, c.switch.language) == (
        "Asia/Shanghai", "cn", "Example", "zh-CN")
    assert c.switch.languages == ["zh-CN"]
    assert (c.ami.host, c.ami.port, c.ami.username, c.ami.secret) == ("127.0.0.1", 5038, "ivr", "")
    assert (c.agi.host, c.agi.port, c.http.port) == ("127.0.0.1", 4573, 8780)
    assert c.agents == []
    assert (c.rings.warn_rings, c.rings.critical_rings, c.rings.reroute, c.rings.cadence) == (
        3, 6, False, None)
    assert (c.silence.pause, c.hold.reminder_interval, c.hold.choices_after) == (5.0, 30.0, 60.0)
    assert c.transfer.confirm_timeout == 10.0 and c.holidays.country == "CN"
    assert (c.prompts.source, c.prompts.build, c.prompts.sound_prefix) == (
        "", "", "ivr")
    assert c.database.url.startswith("sqlite:///") and c.alarms.userevent


def test_sample_file_loads_with_every_section() -> None:
    c = load_config(REPO / "deploy/ivr.toml", env={})
    assert c.agents[0].dial == "PJSIP/1001" and c.agents[1].dial == "Local/1002@agents"
    assert c.switch.languages == ["zh-CN", "en-US"]
    sample = (REPO / "deploy/ivr.toml").read_text(encoding="utf-8")
    for f in dataclasses.fields(Config):
        if f.name not in ("path", "warnings"):
            assert f"[{f.name}]" in sample or f"[[{f.name}]]" in sample, f.name


def test_values_and_agent_dial_default(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, """
[switch]
company = "ACME"
[rings]
on_ms = 2000
off_ms = 4000
[hold]
reminder_interval = 20
[[agents]]
number = "1001"
"""), env={})
    assert c.switch.company == "ACME" and c.hold.reminder_interval == 20.0
    assert isinstance(c.hold.reminder_interval, float)
    assert c.rings.cadence is not None and c.rings.cadence.period == 6.0
    assert c.agents[0].dial == "PJSIP/1001"


BAD = """[switch]
timezone = "Mars/Olympus"
tone_zone = "zz"
colour = "blue"

[ami]
port = "5038"

[[agents]]
number = "1001"
dial = "PJSIP/1001"

[[agents]]
number = "1002"
dial = "1002"

[hold]
reminder_interval = true

[[holidays.overrides]]
id = "national_day"
start = 2027-10-08
end = 2027-10-01

[prompts]
source = "no/such/dir"

[nonsense]
x = 1
"""


def test_every_problem_listed_with_path_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BAD), env={})
    message = str(info.value)
    expected = [
        "switch.timezone (line 2): unknown time zone 'Mars/Olympus'",
        "switch.tone_zone (line 3): unknown tone zone 'zz'",
        "switch.colour (line 4): unknown key",
        "ami.port (line 7): expected int, got str",
        "agents[1].dial (line 15): not an Asterisk dial string",
        "hold.reminder_interval (line 18): expected float, got bool",
        "holidays.overrides[0].end (line 23): end 2027-10-01 is before start 2027-10-08",
        "prompts.source (line 26): prompt file no/such/dir/zh-CN.toml does not exist",
        "nonsense (line 28): unknown key",
    ]
    for line in expected:
        assert line in message, line
    assert len(info.value.details["problems"]) == len(expected)
    assert info.value.error_id == "invalid-config"


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TOML syntax error: .*line 3"):
        load_config(write(tmp_path, '[switch]\ncompany = "ok"\nlanguage = zh\n'), env={})


def test_unknown_holiday_ids_and_missing_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, """
[holidays]
disabled = ["christmas"]
[[holidays.additions]]
id = "anniversary"
start = 2027-06-18
end = 2027-06-18
text = { "en-US" = "Happy anniversary!" }
"""), env={})
    message = str(info.value)
    assert "holidays.disabled[0] (line 3): unknown holiday id 'christmas'" in message
    assert "holidays.additions[0].text" in message and "no greeting text for zh-CN" in message


def test_key_lines() -> None:
    lines = key_lines('a = 1\n[s]\nb = 2\n[[l]]\nc = 3\n[[l]]\n"d" = 4\n[t.u]\ne.f = 5\n')
    assert lines == {"a": 1, "s": 2, "s.b": 3, "l[0]": 4, "l[0].c": 5, "l[1]": 6,
                     "l[1].d": 7, "t.u": 8, "t.u.e.f": 9}


def test_secrets_from_env_and_file(tmp_path: Path) -> None:
    secret = write(tmp_path, "s3cret\n", "ami.secret")
    token = write(tmp_path, "tok-0123456789abcdef\n", "http.token")
    conf = write(tmp_path, f'[ami]\nsecret_file = "{secret}"\n[http]\ntoken_file = "{token}"\n')
    c = load_config(conf, env={})
    assert (c.ami.secret, c.http.token, c.warnings) == ("s3cret", "tok-0123456789abcdef", [])
    c = load_config(conf, env={"IVR_AMI_SECRET": "fromenv", "IVR_HTTP_TOKEN": "t2-0123456789abcdef"})
    assert (c.ami.secret, c.http.token) == ("fromenv", "t2-0123456789abcdef")
    missing = write(tmp_path, '[ami]\nsecret_file = "/no/such/file"\n', "m.toml")
    with pytest.raises(ConfigError, match=r"ami.secret_file .*cannot read /no/such/file"):
        load_config(missing, env={})


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_world_readable_secrets_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write(tmp_path, '[ami]\nsecret = "inline"\n')
    assert load_config(conf, env={}).warnings == []
    conf.chmod(0o644)
    c = load_config(conf, env={})
    assert len(c.warnings) == 1 and "world-readable" in c.warnings[0]
    secret = write(tmp_path, "s", "secret")
    secret.chmod(0o644)
    conf2 = write(tmp_path, f'[ami]\nsecret_file = "{secret}"\n', "b.toml")
    assert any("ami.secret_file" in w for w in load_config(conf2, env={}).warnings)
    assert main(["check-config", str(conf)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "world-readable" in err


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "deploy/ivr.toml")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, BAD))]) == 1
    err = capsys.readouterr().err
    assert "9 problem(s)" in err and "agents[1].dial" in err
    assert main(["check-config"]) == 0


def test_database_timeouts_and_spool_limits_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "ivr.toml"
    path.write_text('[database]\ntimeout = 0\nconnect_timeout = -1\nretry_initial = 5.0\nretry_max = 1.0\n'
                    'spool_max_mb = 0\nqueue_size = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    problems = caught.value.details["problems"]
    for key in ("database.timeout", "database.connect_timeout", "database.retry_max", "database.spool_max_mb",
                "database.queue_size"):
        mine = [p for p in problems if p.startswith(f"{key} ")]
        assert len(mine) == 1, (key, problems)  # one error per bad key (the number check's)
    assert "database.timeout (line 2): must be greater than 0, got 0.0" in problems, problems


def test_allow_numbers_must_be_valid_patterns(tmp_path: Path) -> None:
    """[transfer] allow_numbers: outside numbers stay off by default; each pattern is
    checked at load, and a bad one is named with its key and line."""
    assert load_config(None, env={}).transfer.allow_numbers == []
    good = load_config(write(tmp_path, '[transfer]\nallow_numbers = ["1[0-9]{10}", "^9[0-9]{5}$"]\n'), env={})
    assert good.transfer.allow_numbers == ["1[0-9]{10}", "^9[0-9]{5}$"]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[transfer]\nallow_numbers = ["1[0-9]{10}", "(", ""]\n'), env={})
    problems = info.value.details["problems"]
    assert problems[0].startswith("transfer.allow_numbers[1] (line 2): not a valid regular expression '('")
    assert problems[1].startswith("transfer.allow_numbers[2] (line 2): empty pattern")
    with pytest.raises(ConfigError, match=r"transfer.allow_numbers \(line 2\): expected a list"):
        load_config(write(tmp_path, '[transfer]\nallow_numbers = "1[0-9]{10}"\n'), env={})


def test_agi_key_from_env_file_or_inline(tmp_path):
    """The FastAGI key: IVR_AGI_KEY > key_file (the switch's own ivr-agi-key.conf, or a
    bare key) > inline; too short or with characters a URI would mangle: refused."""
    from ivr.switch.embedded import agi_key_include

    key = "A" * 20 + "-_b9" * 4
    include = tmp_path / "ivr-agi-key.conf"
    include.write_text(agi_key_include(key))
    include.chmod(0o600)
    conf = tmp_path / "ivr.toml"
    conf.write_text(f'[agi]\nkey_file = "{include}"\n')
    assert load_config(conf, env={}).agi.key == key
    assert load_config(conf, env={"IVR_AGI_KEY": "E" * 32}).agi.key == "E" * 32
    bare = tmp_path / "agi-key"
    bare.write_text(key + "\n")
    conf.write_text(f'[agi]\nkey_file = "{bare}"\n')
    assert load_config(conf, env={}).agi.key == key
    conf.write_text('[agi]\nkey = "short"\n')
    with pytest.raises(ConfigError, match=r"agi\.key .*at least 16"):
        load_config(conf, env={})
    conf.write_text('[agi]\nkey_file = "/no/such/file"\nmax_sessions = 0\nheader_timeout = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(conf, env={})
    assert {p.split(" ")[0].rstrip(":") for p in err.value.details["problems"]} >= {
        "agi.key_file", "agi.max_sessions", "agi.header_timeout"}
    assert load_config(None, env={}).agi.key == ""  # no key: the server refuses every session


def test_unclear_and_hold_announcement_limits(tmp_path: Path) -> None:
    text = ("[hold]\nchoices_after = 360.0\n\n"
            "[unclear]\nclear_min_ms = 800\nclear_max_ms = 700\nclear_threshold = 40000\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert "hold.choices_after" in message and "at most five minutes" in message
    assert "unclear.clear_max_ms" in message and "unclear.clear_threshold" in message
    ok = load_config(write(tmp_path, "[hold]\nchoices_after = 360.0\nannounce = false\n"), env={})
    assert ok.hold.announce is False and ok.unclear.pause == 5.0


@pytest.mark.parametrize("value", ["", "jazz;Hangup()", "a b", "x\\nSET VARIABLE", "é"])
def test_a_moh_class_the_switch_could_misread_is_refused_at_load(tmp_path: Path, value: str) -> None:
    """[hold] moh_class goes into the hold route's SET MUSIC ON and the call-back agent's
    StartMusicOnHold: a name with a separator or a space is refused, naming the key."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f'[hold]\nmoh_class = "{value}"\n'), env={})
    assert "hold.moh_class" in str(info.value)
    assert load_config(write(tmp_path, '[hold]\nmoh_class = "jazz-2_b"\n'), env={}).hold.moh_class == "jazz-2_b"
