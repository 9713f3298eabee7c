"""What every caller said lately, as the switch reported it: AMI ``ChannelTalkingStart`` /
``ChannelTalkingStop`` (``TALK_DETECT``) per channel, with the switch's own timestamps.

Issue 17: when a controller of a pair dies mid-script, the caller's FastAGI session ends
and the next node runs the route again 1-2 s later. Nobody listens in between, but the
detector stays armed on the channel and Asterisk keeps raising its events to every AMI
session, a standby's too. Every node keeps them here, so the node that takes the script
over (at the stage the dead one kept on the channel) can ask what the caller said *since
that stage was written*: :meth:`TalkLog.started_since` (any talk: the silent-call script),
:meth:`TalkLog.bursts_since` (finished bursts and their length: the unclear line).

Only events that name the channel (``Uniqueid``) and carry a usable switch ``Timestamp``
are kept; a channel's entries go with its ``Hangup``. Bounded: the last
:data:`BURSTS_PER_CHANNEL` events of the last :data:`CHANNELS` channels that talked.
Events lost while this node's AMI connection was down are not here (the caller is then
heard from the next talk on, as before).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from ivr.ami.link import AmiLink

CHANNELS = 5000
BURSTS_PER_CHANNEL = 16


@dataclass(frozen=True)
class Talk:
    """One event: ``at`` (switch time, s since 1970), ``stop`` False for a start, and for
    a stop the burst's ``duration_ms`` as the switch measured it."""

    at: float
    stop: bool = False
    duration_ms: int = 0


def _timestamp(event: Any) -> float | None:
    try:
        at = float(event["Timestamp"])
    except (KeyError, TypeError, ValueError):
        return None
    return at if math.isfinite(at) and at > 0 else None


class TalkLog:
    """The recent talk of every channel on one switch (see the module docstring)."""

    def __init__(self, *, channels: int = CHANNELS, per_channel: int = BURSTS_PER_CHANNEL) -> None:
        self.channels, self.per_channel = channels, per_channel
        self._talk: OrderedDict[str, deque[Talk]] = OrderedDict()

    def attach(self, ami: AmiLink) -> TalkLog:
        ami.subscribe("ChannelTalkingStart", self.handle)
        ami.subscribe("ChannelTalkingStop", self.handle)
        ami.subscribe("Hangup", self.handle)
        return self

    def handle(self, event: Any) -> None:
        uid = str(event.get("Uniqueid", ""))
        kind = event.get("Event")
        if not uid:
            return
        if kind == "Hangup":
            self._talk.pop(uid, None)
            return
        at = _timestamp(event)
        if at is None or kind not in ("ChannelTalkingStart", "ChannelTalkingStop"):
            return
        talk = Talk(at)
        if kind == "ChannelTalkingStop":
            try:
                talk = Talk(at, stop=True, duration_ms=max(int(str(event.get("Duration", ""))), 0))
            except ValueError:
                return
        entries = self._talk.pop(uid, None) or deque(maxlen=self.per_channel)
        entries.append(talk)
        self._talk[uid] = entries  # the most recent channel last
        while len(self._talk) > self.channels:
            self._talk.popitem(last=False)

    def started_since(self, uniqueid: str, since: float) -> float | None:
        """The switch time of the first talk that began on ``uniqueid`` after ``since``
        (switch time), or None."""
        return next((t.at for t in self._talk.get(uniqueid, ()) if not t.stop and t.at > since), None)

    def bursts_since(self, uniqueid: str, since: float) -> list[Talk]:
        """The bursts on ``uniqueid`` that ended after ``since`` (switch time)."""
        return [t for t in self._talk.get(uniqueid, ()) if t.stop and t.at > since]

    def __len__(self) -> int:
        return len(self._talk)
