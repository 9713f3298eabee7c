"""Checks of the configuration loader (:mod:`ivr.config`) that stand on their own: the
collector of problems (each naming its key and line) and the secrets, where each may come
from (:data:`SECRETS`: env, systemd credential, file, inline), how long it must be, and
whether a file holding one is world-readable."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ivr.rules.callback import LiveRule, parse_span, parse_window
from ivr.sections import CallbacksConfig, Config


class Problems:
    """Every problem found in one configuration, each naming its key and, where known, its line."""

    def __init__(self, lines: dict[str, int], source: str) -> None:
        self.items: list[str] = []
        self.lines = lines
        self.source = source

    def add(self, path: str, message: str) -> None:
        probe = path
        while probe and probe not in self.lines:  # nearest enclosing key with a line
            probe = re.sub(r"(\[\d+\]|\.[^.\[]+|^[^.\[]+)$", "", probe)
        where = f" (line {self.lines[probe]})" if probe else ""
        self.items.append(f"{path}{where}: {message}")


@dataclass(frozen=True)
class Secret:
    """Where one secret may come from, in this order: env, systemd credential, file, inline."""

    key: str  # the inline key: "ami.secret"
    file_key: str  # "ami.secret_file"
    env: str  # "IVR_AMI_SECRET"
    credential: str  # LoadCredential= name: read from $CREDENTIALS_DIRECTORY/<credential>


SECRETS = (
    Secret("ami.secret", "ami.secret_file", "IVR_AMI_SECRET", "ami-secret"),
    Secret("http.token", "http.token_file", "IVR_HTTP_TOKEN", "http-token"),
    Secret("alarms.webhook_secret", "alarms.webhook_secret_file", "IVR_WEBHOOK_SECRET", "webhook-secret"),
    Secret("agi.key", "agi.key_file", "IVR_AGI_KEY", "agi-key"),
)
MIN_SECRET_LENGTH = 16  # characters (visible ASCII): the HTTP token and the webhook key


def read_secret(config: Config, secret: Secret, env: Mapping[str, str],
                 problems: Problems) -> tuple[str, str]:
    """The secret's value and where it came from (an env name, a credential path or a key)."""
    section, name = secret.key.split(".")  # read by its TOML key path, the name the problems give
    inline = getattr(getattr(config, section), name)
    file = getattr(getattr(config, section), secret.file_key.split(".")[1])
    if env.get(secret.env):
        return env[secret.env], secret.env
    sources = [(secret.file_key, file)] if file else []
    if env.get("CREDENTIALS_DIRECTORY"):  # systemd's LoadCredential= directory
        cred = Path(env["CREDENTIALS_DIRECTORY"]) / secret.credential
        if cred.exists():
            sources.insert(0, (f"credential {secret.credential}", str(cred)))
    for source, path in sources:
        try:
            return Path(path).read_text(encoding="utf-8").strip(), source
        except OSError as exc:
            problems.add(secret.file_key, f"cannot read {path}: {exc.strerror or exc}")
            return "", source
    return inline, secret.key


def check_secret(value: str, source: str, what: str, problems: Problems) -> None:
    if not value:
        return
    if len(value) < MIN_SECRET_LENGTH:
        problems.add(source, f"{what} is {len(value)} characters long; at least {MIN_SECRET_LENGTH} are "
                     "needed (e.g. openssl rand -hex 24)")
    elif not all("!" <= ch <= "~" for ch in value):
        problems.add(source, f"{what} may hold only visible ASCII characters (no spaces)")


def world_readable(path: str | os.PathLike[str]) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


AGI_KEY_MIN = 16
_KEY_LINE = re.compile(r"^\s*IVR_AGI_KEY\s*=>?\s*(\S+)\s*$", re.MULTILINE)


def agi_key(text: str, source: str, problems: Problems) -> str:
    """The FastAGI key from what :func:`_read_secret` found: a bare key, or the switch's
    Asterisk include with its ``IVR_AGI_KEY = ...`` line (one file serves both)."""
    m = _KEY_LINE.search(text)
    if m:
        return m.group(1)
    bare = text.strip()
    if not bare or ("\n" not in bare and "=" not in bare and "[" not in bare):
        return bare
    problems.add(source, "holds no IVR_AGI_KEY = ... line")
    return ""


def validate_callbacks(cb: CallbacksConfig, add: Callable[[str, str], None]) -> None:  # add(key, problem)
    try:
        parse_span(cb.hours)
    except ValueError as exc:
        add("callbacks.hours", str(exc))
    if not cb.days:  # each day's range: NUMBER_RANGES (ivr/config.py)
        add("callbacks.days", "at least one ISO weekday, 1 (Monday) to 7")
    if not cb.backoff:
        add("callbacks.backoff", "at least one wait (s)")
    try:
        LiveRule(cb.live_word_gap_ms, cb.live_pause_ms, cb.live_greeting_max_ms, cb.live_min_word_ms)
    except ValueError as exc:
        add("callbacks.live", str(exc))
    if not 1 <= len(cb.windows) <= 9:
        add("callbacks.windows", f"1 to 9 windows (keys 1-9), got {len(cb.windows)}")
    for i, text in enumerate(cb.windows):
        try:
            parse_window(str(text))
        except ValueError as exc:
            add(f"callbacks.windows[{i}]", str(exc))


def advertise_problem(url: str) -> str | None:
    """Why ``url`` cannot be a node's advertised API (None: it can): http(s)://host[:port]."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be http://host:port or https://host:port, got {url[:100]!r}"
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment \
            or parts.path not in ("", "/") or any(ch in url for ch in "\r\n\0 "):
        return f"only scheme, host and port (no credentials, path or query), got {url[:100]!r}"
    if port == 0:
        return "port 0 cannot be reached"
    return None
