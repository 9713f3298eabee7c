"""What the switch says of a queue (app_queue): its members, by AMI ``QueueStatus`` (a
read action: a standby may ask too)."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.ami.link import AmiLink
from ivr.rules.dialing import QUEUE_RE


@dataclass(frozen=True)
class QueueMember:
    interface: str  # what app_queue dials: PJSIP/1001, Local/1001@agents/n
    name: str
    paused: bool


async def queue_members(conn: AmiLink, queue: str, timeout: float = 5.0) -> list[QueueMember] | None:
    """The members of ``queue`` as the switch has them now; None when the switch has no
    such queue. Raises :class:`~ivr.ami.connection.AmiError` if the switch cannot be asked,
    ValueError for a name that is not a queue name."""
    if not QUEUE_RE.match(queue):
        raise ValueError(f"{queue!r} is not a queue name (letters, digits, _ and -)")
    reply = await conn.action({"Action": "QueueStatus", "Queue": queue}, timeout, as_list=True)
    messages = reply if isinstance(reply, list) else [reply]
    if not any(m.get("Event") == "QueueParams" and m.get("Queue") == queue for m in messages):
        return None
    return [QueueMember(interface=str(m.get("Interface") or m.get("Location") or m.get("StateInterface") or ""),
                        name=str(m.get("MemberName") or m.get("Name") or ""),
                        paused=str(m.get("Paused", "0")) not in ("0", "", "false"))
            for m in messages if m.get("Event") == "QueueMember" and m.get("Queue") == queue]
