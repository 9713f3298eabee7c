"""Live channels on the switch, followed from AMI events and resynced after reconnects.

Keyed by ``Uniqueid``, grouped by ``Linkedid`` (one call). Events during an AMI outage
are lost, so after every (re)login :meth:`ChannelTracker.resync` asks ``CoreShowChannels``:
channels that vanished meanwhile are dropped (listeners hear ``on_gone(channel,
"vanished")``), channels that appeared are added, and states are corrected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from ivr.ami.link import AmiLink
from ivr.rules.dialing import device_key, device_of

__all__ = ["device_key", "device_of"]  # pure (ivr.rules.dialing), re-exported for the adapters

log = structlog.get_logger("ivr.ami.channels")

# AST_STATE_* as AMI reports them in ChannelState.
STATE_RING, STATE_RINGING, STATE_UP = 4, 5, 6

GoneCallback = Callable[["Channel", str], None]


def event_time(event: Any) -> float:
    """The event's own Asterisk timestamp (manager.conf ``timestampevents``), or now."""
    try:
        return float(event["Timestamp"])
    except (KeyError, TypeError, ValueError):
        return time.time()


AgentLegCheck = Callable[[str, str], bool]
"""``(uniqueid, channel name) -> bool``: is this channel an agent's leg? The hold and
transfer services ask it before acting on an agent key (``IvrHoldKey``,
``IvrTransferRequest``): the switch arms those keys on agent legs only
(ivr-globals.conf ``[ivr-agent-keys]``), and the controller refuses them from any other
channel too (defence in depth, issue 13). The ring monitor's ``is_agent_leg`` is the one
the controller passes; :func:`configured_agent_leg` is the default."""


def configured_agent_leg(dials: Iterable[str]) -> AgentLegCheck:
    """An :data:`AgentLegCheck` that knows only the configured agents: a channel whose
    device is one of the ``dials`` (``PJSIP/1001-0000002a`` for ``PJSIP/1001``)."""
    devices = frozenset(device_key(d) for d in dials if d)

    def check(_uniqueid: str, channel: str) -> bool:
        return bool(channel) and device_key(channel) in devices

    return check


def from_agent_leg(event: Mapping[str, Any], agent_leg: AgentLegCheck) -> bool:
    """Whether an agent key's ``UserEvent`` came from an agent's leg: it names a channel
    that is not the call's first (the caller's, whose Uniqueid is the Linkedid) and that
    ``agent_leg`` knows. The hold, unclear-line and transfer keys refuse any other."""
    uid = str(event.get("Uniqueid", ""))
    return bool(uid) and uid != event.get("Linkedid") and agent_leg(uid, str(event.get("Channel", "")))


@dataclass
class Channel:
    uniqueid: str
    linkedid: str
    name: str
    state: int = 0
    state_desc: str = ""
    context: str = ""
    bridge: str = ""
    created: float = field(default_factory=time.time)
    state_changed: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.monotonic)  # local clock of the last event

    @property
    def device(self) -> str:
        return device_of(self.name)


class ChannelTracker:
    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}  # read-only outside: _add/_drop keep _calls in step
        self._calls: dict[str, dict[str, Channel]] = {}  # linkedid -> its channels, in channels' order
        self._gone: list[GoneCallback] = []
        self._conn: AmiLink | None = None
        self.resyncs = 0
        self.synced = asyncio.Event()  # set after the first resync

    # -- wiring ---------------------------------------------------------------------
    def attach(self, conn: AmiLink) -> None:
        self._conn = conn
        for name in ("Newchannel", "Newstate", "NewConnectedLine", "Rename", "BridgeEnter",
                     "BridgeLeave", "Hangup", "Newexten"):
            conn.subscribe(name, self.handle)
        conn.on_connected(self.resync)

    def on_gone(self, callback: GoneCallback) -> None:
        """``callback(channel, reason)`` when a channel hangs up ("hangup") or is found
        missing at a resync ("vanished")."""
        self._gone.append(callback)

    # -- queries --------------------------------------------------------------------
    def get(self, uniqueid: str) -> Channel | None:
        return self.channels.get(uniqueid)

    def by_name(self, name: str) -> Channel | None:
        return next((c for c in self.channels.values() if c.name == name), None)

    def call(self, linkedid: str) -> list[Channel]:
        return list(self._calls.get(linkedid, {}).values())

    # -- the channels and the per-call index, changed together ------------------------
    def _add(self, ch: Channel) -> None:
        self.channels[ch.uniqueid] = ch
        self._calls.setdefault(ch.linkedid, {})[ch.uniqueid] = ch

    def _drop(self, uniqueid: str) -> Channel | None:
        ch = self.channels.pop(uniqueid, None)
        if ch is not None:
            group = self._calls.get(ch.linkedid)
            if group is not None:
                group.pop(uniqueid, None)
                if not group:
                    del self._calls[ch.linkedid]
        return ch

    def _relink(self, ch: Channel, linkedid: str) -> None:
        """The channel joined another call (rare): move it in the index, keeping order."""
        old = self._calls.get(ch.linkedid)
        if old is not None:
            old.pop(ch.uniqueid, None)
            if not old:
                del self._calls[ch.linkedid]
        ch.linkedid = linkedid
        self._calls[linkedid] = {u: c for u, c in self.channels.items() if c.linkedid == linkedid}

    def __len__(self) -> int:
        return len(self.channels)

    # -- events ---------------------------------------------------------------------
    def _upsert(self, event: Any) -> Channel | None:
        uid = event.get("Uniqueid")
        if not uid or not isinstance(uid, str):  # missing, or a repeated header (a list)
            return None
        ch = self.channels.get(uid)
        at = event_time(event)
        linkedid = event.get("Linkedid")
        if not isinstance(linkedid, str):  # a repeated header (a list) is no call id
            linkedid = ""
        if ch is None:
            ch = Channel(uid, linkedid or uid, event.get("Channel", ""), created=at, state_changed=at)
            self._add(ch)
        ch.seen = time.monotonic()
        if event.get("Channel"):
            ch.name = event["Channel"]
        if linkedid and linkedid != ch.linkedid:
            self._relink(ch, linkedid)
        if event.get("Context"):
            ch.context = event["Context"]
        state = str(event.get("ChannelState") or "")
        if state.isascii() and state.isdigit():  # a malformed state ('²', 'x') is ignored, not fatal
            new = int(state)
            if new != ch.state:
                ch.state, ch.state_changed = new, at
            ch.state_desc = event.get("ChannelStateDesc", ch.state_desc)
        return ch

    def handle(self, event: Any) -> None:
        kind = event.get("Event", "")
        if not isinstance(event.get("Uniqueid", ""), str):
            return  # a repeated Uniqueid header: no channel to follow
        if kind == "Hangup":
            ch = self._drop(event.get("Uniqueid", ""))
            if ch is not None:
                self._notify(ch, "hangup")
            return
        if kind == "Rename":
            ch = self.channels.get(event.get("Uniqueid", ""))
            if ch is not None:
                ch.name = event.get("Newname", ch.name)
            return
        ch = self._upsert(event)
        if ch is None:
            return
        if kind == "BridgeEnter":
            ch.bridge = event.get("BridgeUniqueid", "")
        elif kind == "BridgeLeave":
            ch.bridge = ""

    def _notify(self, ch: Channel, reason: str) -> None:
        for cb in list(self._gone):
            try:
                cb(ch, reason)
            except Exception:
                log.exception("channels.gone_callback_failed", uniqueid=ch.uniqueid)

    async def resync(self) -> None:
        """Rebuild from ``CoreShowChannels`` (after a reconnect: events were lost)."""
        if self._conn is None:
            return
        asked = time.monotonic()
        replies = await self._conn.action({"Action": "CoreShowChannels"}, 10.0, as_list=True)
        self.apply_snapshot([m for m in replies if m.get("Event") == "CoreShowChannel"], asked)

    def apply_snapshot(self, rows: list[Any], asked: float | None = None) -> None:
        """Apply a ``CoreShowChannels`` listing requested at local time ``asked``.

        AMI does not order events against action replies: events of a channel created
        after the listing was taken can arrive before the reply. A channel heard of since
        ``asked`` is therefore never taken for vanished."""
        asked = time.monotonic() if asked is None else asked
        live: set[str] = set()
        for row in rows:
            ch = self._upsert(row)
            if ch is None:
                continue
            ch.bridge = row.get("BridgeId", "") or ""
            live.add(ch.uniqueid)
        vanished = [c for uid, c in self.channels.items() if uid not in live and c.seen < asked]
        for ch in vanished:
            self._drop(ch.uniqueid)
            self._notify(ch, "vanished")
        self.resyncs += 1
        self.synced.set()
        log.info("channels.resynced", live=len(live), vanished=len(vanished))
