"""Errors the controller reports to people: each has a stable id and a clear message."""

from __future__ import annotations

from typing import Any


class IvrError(Exception):
    """An error with a stable ``error_id``, a human message and structured details."""

    error_id = "ivr-error"
    # What the API answers when a service raises it (None: 502 for the switch's errors, else 409).
    http_status: int | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(IvrError):
    error_id = "invalid-config"


class SwitchError(IvrError):
    """The embedded or external Asterisk could not be built, started or reached."""

    error_id = "switch-error"


class NoSuchCall(IvrError):
    """No call with that id is on the switch (hold, transfer, and the API: 404)."""

    error_id = "no-such-call"
    http_status = 404
