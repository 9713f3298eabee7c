"""Dial strings and hunt entries (pure): what ``[[agents]] dial`` and ``[rings]
reroute_target`` may be, and how a re-route target becomes an ivr-agents.conf entry.
Both the configuration check and the ring monitor use it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

DIAL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*/\S+$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# A phone number the switch may dial for a customer (a call-back): digits, a leading +.
PHONE_RE = re.compile(r"^\+?[0-9]{2,20}$")
# A music-on-hold class ([hold] moh_class) as it may go into an AGI command, a channel
# variable on an Originate and the dialplan's StartMusicOnHold (no separator of either).
MOH_CLASS = re.compile(r"[A-Za-z0-9_-]{1,80}")


def device_of(channel_name: str) -> str:
    """``PJSIP/1001-0000002a`` -> ``PJSIP/1001``; ``Local/a1@ctx-00000001;1`` -> ``Local/a1@ctx``."""
    name = channel_name.split(";", 1)[0]
    head, sep, tail = name.rpartition("-")
    if sep and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail.lower()):
        return head
    return name


def device_key(name: str) -> str:
    """One key for a dial string, a queue member interface and a channel name of the same
    device: ``PJSIP/1001/sip:1001@host``, ``PJSIP/1001-0000002a`` -> ``PJSIP/1001``;
    ``Local/1001@agents/n``, ``Local/1001@agents-00000001;1`` -> ``Local/1001@agents``."""
    return "/".join(device_of(name).split("/")[:2])


class Agent(Protocol):
    """An ``[[agents]]`` entry (:class:`ivr.sections.AgentConfig`, which imports this module)."""

    @property
    def number(self) -> str: ...

    @property
    def device(self) -> str: ...  # its dial string, PJSIP/<number> when none is given


def reroute_entry(target: str, agents: Iterable[Agent] = ()) -> str:
    """``[rings] reroute_target`` as an ivr-agents.conf hunt entry: ``queue:NAME`` ->
    ``queue=NAME``; an agent number of ``[[agents]]`` -> ``NUMBER=DIAL``; a dial string
    -> ``=DIAL`` (no agent number to announce). ``ValueError`` for anything else."""
    target = target.strip()
    if not target:
        return ""
    if target.startswith("queue:"):
        name = target[len("queue:"):]
        if not QUEUE_RE.match(name):
            raise ValueError(f"bad queue name in {target!r} (letters, digits, _ and -)")
        return f"queue={name}"
    if target.isascii() and target.isdigit():
        for agent in agents:
            if str(agent.number) == target:
                return f"{target}={agent.device}"
        raise ValueError(f"{target!r} is not the number of an agent in [[agents]]")
    if DIAL_RE.match(target) and "=" not in target and "|" not in target:
        return f"={target}"
    raise ValueError(f"{target!r} is neither queue:NAME, an agent number, nor a dial string (PJSIP/2001)")
