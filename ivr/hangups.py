"""R6 "let the caller hang up first": which side of a call hung up first, from AMI events.

Seen on the switch (Asterisk 22, see tests/unit/test_hangups.py for the recorded
sequences): when a party hangs up, its channel in the bridge gets ``HangupRequest``
(a hang-up asked for from outside the channel: a SIP BYE, or the far half of a Local
channel going away) while it is still bridged; the other party only gets
``BridgeLeave`` and then, when its dialplan ends, ``SoftHangupRequest`` / ``Hangup``.
A ``SoftHangupRequest`` on a bridged channel means the switch itself (an AMI ``Hangup``,
a timeout, the controller) ended the call.

So: the first channel in conversation (in a bridge, or an agent leg that answered,
``DialEnd ANSWER``, and has not left a bridge yet) that receives ``HangupRequest`` (or
``SoftHangupRequest``, or ``Hangup``) names the side: the caller's channel (Uniqueid =
Linkedid) is ``caller``, any other is ``agent``, a soft request is ``system``. A
``HangupRequest`` on the caller's channel before that is the ``caller`` (hung up in the
IVR or while an agent rang). Otherwise the ``system`` ended the call (the IVR released
it, or an AMI ``Hangup``). An agent leg that rang and was refused or cancelled does not
count: it never answered.

:func:`hung_up_first` is pure; :class:`HangupTracker` feeds it from the live AMI stream
and publishes ``call.ended`` on the EventBus when the last channel of a call is gone.
Events are lost while the AMI connection is down (Asterisk restarting, say), so after every
resync :meth:`HangupTracker.reconcile` closes the calls that ended meanwhile: their
``call.ended`` says ``hung_up_first = "unknown"``, ``reason = "ended-while-disconnected"``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from ivr.ami.link import AmiLink
from ivr.events import CallEvent, EventBus

log = structlog.get_logger("ivr.hangups")

AmiEvent = Mapping[str, Any]

CALLER, AGENT, SYSTEM, UNKNOWN = "caller", "agent", "system", "unknown"
ENDED_WHILE_DISCONNECTED = "ended-while-disconnected"


@dataclass(frozen=True)
class HangupVerdict:
    side: str  # caller | agent | system
    channel: str
    cause: str = ""
    cause_txt: str = ""
    bridged: bool = False


def _event(e: AmiEvent) -> str:
    return str(e.get("Event", ""))


def hung_up_first(events: Iterable[AmiEvent], caller_uniqueid: str | None = None) -> HangupVerdict | None:
    """Which side hung up first, from the AMI events of one call (one Linkedid), in order.

    ``caller_uniqueid`` defaults to the Linkedid (the first channel of the call).
    Returns None when the events show no hang-up.
    """
    events = list(events)
    if caller_uniqueid is None:
        caller_uniqueid = next((str(e["Linkedid"]) for e in events if e.get("Linkedid")), None)
    in_bridge: set[str] = set()
    answered: set[str] = set()  # agent legs that answered (DialEnd ANSWER)
    left: set[str] = set()  # channels that have left a bridge: their talk is over

    def verdict(side: str, e: AmiEvent, bridged: bool) -> HangupVerdict:
        return HangupVerdict(side, str(e.get("Channel", "")), str(e.get("Cause", "")),
                             str(e.get("Cause-txt", "")), bridged=bridged)

    for e in events:
        uid = str(e.get("Uniqueid", ""))
        kind = _event(e)
        if kind == "DialEnd" and e.get("DialStatus") == "ANSWER":
            answered.add(str(e.get("DestUniqueid", "")))
        elif kind == "BridgeEnter":
            in_bridge.add(uid)
        elif kind == "BridgeLeave":
            in_bridge.discard(uid)
            left.add(uid)
        elif kind in ("HangupRequest", "SoftHangupRequest", "Hangup"):
            bridged = uid in in_bridge
            talking = bridged or (uid in answered and uid not in left)
            if uid == caller_uniqueid and kind == "HangupRequest" and uid not in left:
                return verdict(CALLER, e, bridged)
            if talking:
                return verdict(SYSTEM if kind == "SoftHangupRequest" else
                               CALLER if uid == caller_uniqueid else AGENT, e, bridged)
    hangups = [e for e in events if _event(e) == "Hangup"]
    if not hangups:
        return None
    e = next((h for h in hangups if str(h.get("Uniqueid")) == caller_uniqueid), hangups[0])
    return verdict(SYSTEM, e, False)


TRACKED = ("Newchannel", "DialEnd", "BridgeEnter", "BridgeLeave", "HangupRequest", "SoftHangupRequest", "Hangup")


@dataclass
class _Call:
    events: list[AmiEvent] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    is_call: bool = False
    started: float | None = None
    first: dict[str, str] = field(default_factory=dict)  # the call's first channel: caller, channel
    said_started: bool = False


class HangupTracker:
    """Collects the hang-up-relevant AMI events per Linkedid; when the last channel of a
    call hangs up, publishes ``call.ended`` with ``hung_up_first``, ``cause``, ``channel``.

    Only Linkedids with a channel in one of ``call_contexts`` are calls (the controller's
    own Local channels for reminders or tests are not).
    """

    def __init__(self, bus: EventBus, call_contexts: Iterable[str] = ("ivr-inbound", "ivr-agents"),
                 clock: Callable[[], float] | None = None) -> None:
        self.bus = bus
        self.call_contexts = frozenset(call_contexts)
        self.calls: dict[str, _Call] = {}
        self._clock = clock or time.time
        self._ended_lately: deque[str] = deque(maxlen=1000)  # call.ended published, newest last

    def attach(self, ami: AmiLink) -> list[Callable[[], None]]:
        """Subscribe to an :class:`~ivr.ami.AmiConnection`; returns the unsubscribe functions."""
        return [*(ami.subscribe(name, self.on_event) for name in TRACKED),
                ami.subscribe("Newexten", self.on_step)]

    def on_step(self, e: AmiEvent) -> None:
        """A dialplan step in a call context marks its Linkedid as a call. The other
        events may all carry another context: a caller who hangs up while the controller
        talks to it is inside the ``[ivr-agi]`` routine (Gosub) when its Hangup comes."""
        if str(e.get("Context", "")) in self.call_contexts:
            linkedid = str(e.get("Linkedid") or "")
            call = self.calls.get(linkedid)
            if call is not None:
                call.is_call = True
                self._started(linkedid, call)

    def on_event(self, e: AmiEvent) -> None:
        linkedid = str(e.get("Linkedid") or "")
        uid = str(e.get("Uniqueid") or "")
        if not linkedid or not uid:
            return
        call = self.calls.setdefault(linkedid, _Call())
        kind = _event(e)
        call.events.append({k: e.get(k) for k in
                            ("Event", "Channel", "Uniqueid", "Linkedid", "Cause", "Cause-txt", "Timestamp",
                             "DestUniqueid", "DialStatus")})
        if kind == "Newchannel" and uid == linkedid:  # the call's first channel: the caller's side
            call.first = {"caller": str(e.get("CallerIDNum") or ""), "channel": str(e.get("Channel") or "")}
        if str(e.get("Context", "")) in self.call_contexts:
            call.is_call = True
        if kind == "Newchannel":
            call.live.add(uid)
            if call.started is None and e.get("Timestamp"):
                call.started = float(e["Timestamp"])
        if call.is_call:
            self._started(linkedid, call)
        if kind == "Hangup":
            call.live.discard(uid)
            if not call.live:
                del self.calls[linkedid]
                if call.is_call:
                    self._ended(linkedid, call, e)

    def _started(self, linkedid: str, call: _Call) -> None:
        """``call.started``, a switch fact (every node of a pair records it, one id): the
        call's first channel and the switch's time of it, once it is known to be a call."""
        if call.said_started or call.started is None or not call.first:
            return
        call.said_started = True
        data = {k: v for k, v in call.first.items() if v and v != "<unknown>"}
        self.bus.fact("call.started", linkedid, ("call.started",), at=call.started, **data)

    def _ended(self, linkedid: str, call: _Call, last: AmiEvent) -> None:
        verdict = hung_up_first(call.events, linkedid)
        at = float(last["Timestamp"]) if last.get("Timestamp") else self._clock()
        data: dict[str, Any] = {"hung_up_first": verdict.side if verdict else None}
        if verdict:
            data.update(cause=verdict.cause, cause_txt=verdict.cause_txt, channel=verdict.channel)
        if call.started is not None:
            data["started_at"] = call.started
        self._publish_ended(linkedid, data, at, fact=True)

    def _publish_ended(self, linkedid: str, data: dict[str, Any], at: float, *, fact: bool = False) -> None:
        """``fact``: the switch's hang-up of the call's last channel, recorded by every node
        of a pair under one id; else (a close after an outage: a guess from a resync) this
        node's, recorded while it leads."""
        self._ended_lately.append(linkedid)
        log.info("call.ended", call_id=linkedid, **data)
        if fact:
            self.bus.fact("call.ended", linkedid, ("call.ended",), at=at, **data)
        else:
            self.bus.publish(CallEvent("call.ended", linkedid, data, at=at))

    def reconcile(self, channels: Iterable[Any], recorded_live: Iterable[str] = ()) -> list[str]:
        """After a resync: close every call that is no longer on the switch.

        ``channels`` are the switch's live channels now (objects with ``uniqueid`` and
        ``linkedid``: :class:`~ivr.ami.channels.ChannelTracker` values after its resync);
        ``recorded_live`` the call ids whose record is still open (a previous controller
        may have left them). A call followed here whose channels vanished, or a recorded
        call with no channel left, gets ``call.ended`` (``hung_up_first = "unknown"``,
        ``reason = "ended-while-disconnected"``, at the current time). A recorded call
        still on the switch is adopted, so that its hang-up later closes it as usual.
        Returns the call ids closed.
        """
        live_by_call: dict[str, set[str]] = {}
        for ch in channels:
            live_by_call.setdefault(str(ch.linkedid), set()).add(str(ch.uniqueid))
        closed: list[str] = []
        now = self._clock()
        for linkedid, call in list(self.calls.items()):
            call.live = set(live_by_call.get(linkedid, ()))  # what the switch has now
            if call.live:
                continue
            del self.calls[linkedid]
            if call.is_call:
                closed.append(linkedid)
                data: dict[str, Any] = {"hung_up_first": UNKNOWN, "reason": ENDED_WHILE_DISCONNECTED}
                if call.started is not None:
                    data["started_at"] = call.started
                self._publish_ended(linkedid, data, now)
        for linkedid in dict.fromkeys(recorded_live):
            if linkedid in closed or linkedid in self._ended_lately:
                continue
            if linkedid in live_by_call:  # still on the switch: its hang-up will close it
                call = self.calls.setdefault(linkedid, _Call())
                call.is_call = True
                call.live |= live_by_call[linkedid]
                continue
            closed.append(linkedid)
            self._publish_ended(linkedid, {"hung_up_first": UNKNOWN, "reason": ENDED_WHILE_DISCONNECTED}, now)
        if closed:
            log.warning("calls.closed_after_outage", calls=closed)
        return closed
