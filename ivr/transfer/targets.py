"""Transfer targets and the numbers the target hears: pure functions, no I/O.

A target is written by people (the agent's keypad, the HTTP API) and becomes an Asterisk
dial string for the controller's Originate:

* ``1002`` -- a configured agent's number: that agent's ``dial`` string (``PJSIP/1002``);
* ``queue:support`` -- a queue, dialled through ``Local/support@ivr-transfer-queue`` so
  that the member who answers must confirm like anyone else;
* ``number:12345`` or other digits -- an outside number, dialled through
  ``Local/12345@ivr-transfer-number`` (the site routes that context to its trunk). Off
  unless the admin allows it: the number must match one of ``[transfer] allow_numbers``
  (regular expressions, whole-number match), else it is refused (toll fraud, issue 13);
* ``PJSIP/2001``, ``Local/x@ctx`` -- a dial string as is (anything with a ``/``), only
  when ``allow_dial`` (tests, trusted callers): through the API it could reach any
  dialplan context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ivr.ami.channels import device_key, device_of
from ivr.catalog import digits_prompts
from ivr.errors import IvrError

_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_DIAL = re.compile(r"^[A-Za-z0-9]+/[A-Za-z0-9_.@+*#:/=-]{1,120}$")
_DIGITS = re.compile(r"^\+?[0-9*#]{1,32}$")


class InvalidTarget(IvrError):
    error_id = "invalid-transfer-target"
    http_status = 400


@dataclass(frozen=True)
class Target:
    kind: str  # "agent" | "queue" | "number" | "dial"
    label: str  # what people wrote, normalised: "1002", "queue:support", "number:123"
    dial: str  # the Asterisk dial string


def resolve_target(text: str, agents: Mapping[str, str], *, allow_dial: bool = False,
                   allow_numbers: Sequence[re.Pattern[str]] = ()) -> Target:
    """``agents`` maps agent numbers to their dial strings; ``allow_numbers`` are the
    patterns an outside number must match in full (none: outside numbers are refused)."""
    raw = (text or "").strip()
    if not raw:
        raise InvalidTarget("transfer target is empty", target=text)
    kind, sep, rest = raw.partition(":")
    if sep and "/" not in kind:
        kind = kind.lower()
        if kind == "agent":
            return _agent(rest, agents, raw)
        if kind == "queue":
            if not _NAME.match(rest):
                raise InvalidTarget(f"queue name {rest!r} is not valid", target=raw)
            return Target("queue", f"queue:{rest}", f"Local/{rest}@ivr-transfer-queue")
        if kind == "number":
            return _number(rest, raw, allow_numbers)
        raise InvalidTarget(f"unknown transfer target kind {kind!r} (agent, queue, number)", target=raw)
    if raw in agents:
        return _agent(raw, agents, raw)
    if "/" in raw:
        if not allow_dial:
            raise InvalidTarget("dial strings are not accepted as transfer targets here", target=raw)
        if not _DIAL.match(raw) or any(c in raw for c in ",&|()"):
            raise InvalidTarget(f"dial string {raw!r} is not valid", target=raw)
        return Target("dial", raw, raw)
    return _number(raw, raw, allow_numbers)


def _agent(number: str, agents: Mapping[str, str], raw: str) -> Target:
    if number not in agents:
        raise InvalidTarget(f"no agent {number!r} is configured", target=raw)
    return Target("agent", number, agents[number])


def _number(number: str, raw: str, allow: Sequence[re.Pattern[str]]) -> Target:
    if not _DIGITS.match(number):
        raise InvalidTarget(f"{raw!r} is neither an agent, a queue nor a phone number", target=raw)
    if not any(p.fullmatch(number) for p in allow):
        raise InvalidTarget(
            f"outside number {number!r} is not allowed as a transfer target "
            "(no pattern of [transfer] allow_numbers matches it)", target=raw)
    return Target("number", f"number:{number}", f"Local/{number}@ivr-transfer-number")


def agent_number(channel_name: str, agents: Mapping[str, str], caller_id: str = "") -> str:
    """The transferring agent's number, for the announcement: the configured agent whose
    dial string is this channel's device, else the digits naming the device
    (``Local/1001@ctx`` -> ``1001``), else the channel's caller id number."""
    device = device_of(channel_name)
    for number, dial in agents.items():
        if device_key(dial) == device_key(device):
            return number
    resource = device.split("/", 1)[-1].split("@", 1)[0]
    if resource.isascii() and resource.isdigit():
        return resource
    return "".join(c for c in caller_id if c in "0123456789")


def announcement(caller_number: str, agent: str) -> list[str]:
    """The prompts the target hears on answer: who is waiting, who transfers, 1 or 2."""
    return ["transfer_announce_caller", *digits_prompts(caller_number),
            "transfer_announce_agent", *digits_prompts(agent), "transfer_announce_menu"]
