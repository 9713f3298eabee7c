"""Confirm with the switch before a destructive step (issue 13, 2d).

An AMI event is one line of text that caller data has been seen to forge (Asterisk prints
some caller fields raw). So before the controller hangs up an agent, a transfer target or
a hold keeper, it asks the switch itself, in this one place:

* the channel to hang up exists and has the expected ``Uniqueid`` (and, where the caller
  gave it, the call's ``Linkedid``): AMI ``Status`` with that channel, one round trip;
* if the step was prompted by another channel's hang-up (``gone``), that channel really is
  gone (``Status`` says "No such channel"; asked again for up to ``GONE_WAIT`` s, since the
  event can arrive a moment before the switch forgets the channel);
* then ``Hangup`` by the confirmed ``Uniqueid`` (Asterisk looks channels up by name or
  Uniqueid), so a channel name reused meanwhile is never hit.

Anything unconfirmed is not done, and logged (``ami.hangup_refused``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from ivr.ami.connection import AmiActionError, AmiError
from ivr.ami.link import AmiLink

log = structlog.get_logger("ivr.ami")

GONE_WAIT = 1.0  # s a channel whose Hangup event came may still be listed by Status
GONE_POLL = 0.05


@dataclass(frozen=True)
class ChannelFacts:
    name: str
    uniqueid: str
    linkedid: str
    state: str


async def channel_facts(conn: AmiLink, channel: str, timeout: float = 5.0) -> ChannelFacts | None:
    """What the switch says of ``channel`` (a name or a Uniqueid); None if it has no such
    channel. Raises :class:`AmiError` if the switch cannot be asked."""
    try:
        # as_list left to panoramisk: "will follow" is a list, "No such channel" is one
        # reply (with as_list=True an error reply would never complete).
        reply = await conn.action({"Action": "Status", "Channel": channel, "AllVariables": "false"}, timeout)
    except AmiActionError:  # "No such channel"
        return None
    rows = [m for m in (reply if isinstance(reply, list) else [reply]) if m.get("Event") == "Status"]
    if not rows:
        return None
    row = rows[0]
    return ChannelFacts(name=str(row.get("Channel", "")), uniqueid=str(row.get("Uniqueid", "")),
                        linkedid=str(row.get("Linkedid", "")), state=str(row.get("ChannelStateDesc", "")))


async def really_gone(conn: AmiLink, channel: str, wait: float = GONE_WAIT) -> bool:
    """Whether the switch no longer has ``channel`` (asked until ``wait`` s have passed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        if await channel_facts(conn, channel) is None:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(GONE_POLL)  # the switch's own state, asked again (bounded)


async def hang_up_confirmed(conn: AmiLink, channel: str, *, uniqueid: str = "", linkedid: str = "",
                            gone: Iterable[str] = (), cause: str | None = None, why: str = "",
                            timeout: float = 5.0) -> bool:
    """Hang ``channel`` up once the switch confirms it (see the module); True if a
    ``Hangup`` was sent. Never raises: an AMI failure is logged and nothing is done."""
    fields = {"channel": channel, "why": why}
    try:
        for other in gone:
            if other and not await really_gone(conn, other):
                log.warning("ami.hangup_refused", reason="the channel whose hang-up prompted this is alive",
                            alive=other, **fields)
                return False
        facts = await channel_facts(conn, channel, timeout)
        if facts is None:
            log.debug("ami.hangup_not_needed", reason="no such channel", **fields)
            return False
        if uniqueid and facts.uniqueid != uniqueid:
            log.warning("ami.hangup_refused", reason="Uniqueid differs", expected=uniqueid,
                        found=facts.uniqueid, **fields)
            return False
        if linkedid and facts.linkedid != linkedid:
            log.warning("ami.hangup_refused", reason="Linkedid differs (another call)", expected=linkedid,
                        found=facts.linkedid, **fields)
            return False
        action = {"Action": "Hangup", "Channel": facts.uniqueid or facts.name}
        if cause:
            action["Cause"] = cause
        await conn.action(action, timeout)
    except AmiError as exc:  # no connection, or the channel went meanwhile
        log.info("ami.hangup_failed", error=str(exc), **fields)
        return False
    return True
