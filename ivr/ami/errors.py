"""The errors of an AMI action: one base (:class:`AmiError`) and what went wrong (not
connected, connection lost in flight, timeout, Asterisk's error reply, login refused, an
unsafe header), and :func:`check_action`, which refuses an action that could break its frame
before anything is sent. Raised by :mod:`ivr.ami.connection`; the HTTP layer maps them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import structlog

from ivr.errors import IvrError

log = structlog.get_logger("ivr.ami")


class AmiError(IvrError):
    """An AMI action could not be carried out."""

    error_id = "ami-error"


class AmiNotConnected(AmiError):
    error_id = "ami-not-connected"


class AmiConnectionLost(AmiError):
    """The connection dropped while the action was in flight; it was not sent again."""

    error_id = "ami-connection-lost"


class AmiTimeout(AmiError):
    error_id = "ami-timeout"


class AmiActionError(AmiError):
    """Asterisk answered the action with an error (``Response: Error``)."""

    error_id = "ami-action-failed"


class AmiLoginError(AmiError):
    error_id = "ami-login-refused"


class AmiUnsafeValue(AmiError):
    """An action header name or value holds CR, LF or NUL (or is not text): sending it
    would end the header early and the rest would read as more headers or a second
    action (AMI action injection). Nothing of the action is sent."""

    error_id = "ami-unsafe-value"


# CR and LF end an AMI line; NUL ends a C string in Asterisk's reader (the value would be
# cut there). A header name also may not hold ":" (it would move the name/value split).
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_UNSAFE_NAME = re.compile(r"[\r\n\x00:]|^\s|\s$|^$")


def check_action(action: Mapping[str, Any]) -> None:
    """Raise :class:`AmiUnsafeValue` (and log ``ami.unsafe_value``) if any header of
    ``action`` could break the frame it is written in. Values may be lists (repeated
    headers, as panoramisk writes ``Variable``); every element is checked. The value is
    never logged, only the action, the header and what is wrong with it."""
    name = str(action.get("Action", "?"))
    for key, value in action.items():
        if not isinstance(key, str) or _UNSAFE_NAME.search(key):
            _refuse(name, repr(key)[:40], "header name is empty, padded, or holds CR, LF, NUL or ':'")
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                _refuse(name, key, f"value of type {type(item).__name__} (want text)")
            if isinstance(item, str) and _UNSAFE_VALUE.search(item):
                _refuse(name, key, "value holds CR, LF or NUL")


def _refuse(action: str, header: str, why: str) -> None:
    log.warning("ami.unsafe_value", action=action, header=header, reason=why)
    raise AmiUnsafeValue(f"AMI {action}: header {header} refused: {why}; nothing was sent",
                         action=action, header=header)


class AmiNotLeader(AmiError):
    """This controller is a standby of a pair (or lost its lease): it does not change the
    switch. The action was not sent."""

    error_id = "ami-not-leader"
    http_status = 503  # the API of a standby: ask the leader (README "Controller pairs")


# Actions that only read the switch: a standby sends them too (its view stays ready).
READ_ACTIONS = frozenset({
    "login", "logoff", "ping", "status", "coreshowchannels", "coresettings", "corestatus",
    "getvar", "listcommands", "showdialplan", "queuestatus", "queuesummary", "devicestatelist",
    "extensionstatelist", "pjsipshowendpoints", "pjsipshowcontacts", "bridgelist", "bridgeinfo",
    "events", "waitevent",
})
