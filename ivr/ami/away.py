"""Taking a caller out of the agent's bridge and back, keeping the agent's call up.

Hold (R4) made this, and the unclear-line script (R3) uses it too; measured on the embedded
Asterisk 22 (see ivr/hold/service.py): the controller originates a *keeper* Local channel
whose ;1 half joins the agent's bridge (``Originate ... Application: BridgeAdd``), so the
bridge and the agent's call stay up; sets a variable naming the agent's channel on the
caller; and ``Redirect``\\ s the caller to a dialplan context that runs a FastAGI route.
When that AGI ends, the context puts the caller back with ``BridgeAdd(${variable})``;
only after the caller's ``BridgeEnter`` is the keeper hung up (before that the agent would
be alone and the bridge would dissolve). Measured: the redirect takes 3 ms, the caller
rejoins the *same* bridge, and the agent's call is never dropped.

Keeper ids start with :data:`KEEPER_PREFIX`, so a feature counting a bridge's parties can
leave keepers out.

What every such feature is made of, once: :class:`AwaySettings` (the prompts' language and
prefix, the agents by device: the base of ``HoldSettings`` and ``UnclearSettings``) and
:class:`AwaySession` (one caller taken aside: the base of ``HoldSession`` and
``UnclearSession``), and :func:`publish` (its events on the bus).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from ivr.agi.channel import AgiChannel
from ivr.ami.channels import Channel, ChannelTracker, device_key
from ivr.ami.confirm import hang_up_confirmed
from ivr.ami.link import AmiLink
from ivr.events import EventBus
from ivr.sections import AgentConfig, PromptsConfig, SwitchConfig, agents_by_device

log = structlog.get_logger("ivr.away")

KEEPER_PREFIX = "ivrkeep-"
TIMEOUT = 5.0
_SWITCH, _PROMPTS = SwitchConfig(), PromptsConfig()  # the defaults
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class AwaySettings:
    """What a feature that takes callers aside is given of ``[switch] language``,
    ``[prompts] sound_prefix`` and ``[[agents]]`` (defaults: the sections')."""

    language: str = _SWITCH.language
    sound_prefix: str = _PROMPTS.sound_prefix
    agents: dict[str, str] = field(default_factory=dict)  # device key ("PJSIP/1001") -> agent name

    @staticmethod
    def shared(switch: SwitchConfig, prompts: PromptsConfig, agents: Sequence[AgentConfig]) -> dict[str, Any]:
        """These fields from the typed sections, for a subclass's ``from_config``."""
        return {"language": switch.language, "sound_prefix": prompts.sound_prefix,
                "agents": {key: a.name or a.number for key, a in agents_by_device(agents).items()}}

    def sound(self, prompt: str) -> str:
        return f"{self.sound_prefix}/{self.language}/{prompt}"

    def agent_name(self, agent: Channel) -> str:
        """The configured name of the agent on ``agent`` (matched by ``device_key``), else its device."""
        return self.agents.get(device_key(agent.name)) or agent.device


@dataclass(kw_only=True)
class AwaySession:
    """One caller taken out of the agent's bridge (the agent's call kept by a keeper)."""

    caller: Channel
    agent: Channel
    via: str  # how it started: phone, feature, key, api; takeover (rebuilt by another node)
    agent_name: str
    keeper: str = ""  # the keeper's ;1 Uniqueid (the ChannelId given to it)
    keeper_name: str = ""
    agi: AgiChannel | None = None  # the caller's FastAGI session while aside
    ended: str = ""  # the outcome, once over

    @property
    def call_id(self) -> str:
        return self.caller.linkedid or self.caller.uniqueid


def publish(bus: EventBus | None, s: AwaySession, kind: str, key: str = "", *, step: str = "",
            at: float | None = None, **data: Any) -> None:
    """An event of a caller aside on the bus, naming the caller and the agent. ``key``: the
    action was sent under that :mod:`ivr.once` key, and is recorded once under it. ``step``:
    a leader's decision recorded under the keeper's id and the step (:meth:`EventBus.decided`),
    which a node taking the caller over finds on the switch and records again."""
    if bus is None:
        return
    data = {"caller": s.caller.name, "uniqueid": s.caller.uniqueid, "agent": s.agent_name,
            "agent_channel": s.agent.name, **data}
    if key:
        bus.keyed(kind, s.call_id, key, at=at, **data)
    elif step:
        bus.decided(kind, s.call_id, (s.keeper, step), at=at, **data)
    else:
        bus.emit(kind, s.call_id, **data)


async def taken_over(tracker: ChannelTracker, call: AgiChannel, *, parse: Callable[[str], T], prefix: str,
                     variable: str, feature: str) -> tuple[T, Channel, Channel, Channel] | None:
    """A caller taken aside by a node that died, whose FastAGI route now runs here
    (issue 17): the stage the route kept on the caller (``IVR_STAGE``, starting with
    ``prefix``, read by ``parse``, which raises ValueError: a channel variable is
    hostile), the caller, the agent (named by ``variable`` on the caller: only a channel
    the switch has is believed) and the keeper (its ;1 half, whose id the dead node made
    from the caller's Uniqueid), from the switch's channels. None when there is no such
    stage, or it does not hold up (logged ``<feature>.stage_refused``), or one of the
    parties is gone (``<feature>.takeover_incomplete``)."""
    refused, incomplete = f"{feature}.stage_refused", f"{feature}.takeover_incomplete"  # structlog event names
    text = await call.get_variable("IVR_STAGE") or ""
    if not text.startswith(prefix):
        return None
    try:
        stage = parse(text)
    except ValueError as exc:
        log.warning(refused, uniqueid=call.uniqueid, error=str(exc))
        return None
    caller = tracker.get(call.uniqueid)
    agent = tracker.by_name(await call.get_variable(variable) or "")
    keeper = next((c for c in tracker.channels.values() if c.name.endswith(";1")
                   and c.uniqueid.startswith(f"{KEEPER_PREFIX}{call.uniqueid}-")), None)
    if caller is None or agent is None or keeper is None:
        log.warning(incomplete, uniqueid=call.uniqueid, caller=caller is not None,
                    agent=agent is not None, keeper=keeper is not None)
        return None
    return stage, caller, agent, keeper


def caller_of(tracker: ChannelTracker, call_id: str) -> Channel | None:
    """The caller's channel of call ``call_id`` (its Linkedid, or a channel's Uniqueid)."""
    chans = [c for c in tracker.channels.values() if call_id in (c.linkedid, c.uniqueid)]
    return next((c for c in chans if c.uniqueid == c.linkedid), None) or next(
        (c for c in chans if c.uniqueid == call_id), None)


def bridge_others(tracker: ChannelTracker, ch: Channel) -> list[Channel]:
    """The other parties in ``ch``'s bridge, keepers left out."""
    return [c for c in tracker.channels.values() if ch.bridge and c.bridge == ch.bridge
            and c.uniqueid != ch.uniqueid and not c.uniqueid.startswith(KEEPER_PREFIX)]


class EventWaiters:
    """One-shot futures on AMI events: ``fut = waiters.expect(pred)``; feed it every event
    of the kinds it waits for (``BridgeEnter``, ``OriginateResponse``) with :meth:`feed`."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[Any], bool], asyncio.Future[Any]]] = []

    def feed(self, event: Any) -> None:
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                self._waiters.remove(entry)
            elif predicate(event):
                future.set_result(event)
                self._waiters.remove(entry)

    def expect(self, predicate: Callable[[Any], bool]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return future


async def step_out(conn: AmiLink, waiters: EventWaiters, *, caller: str, agent: str,
                   keeper_id: str, keeper: str, variable: str, context: str, exten: str,
                   caller_id: str, timeout: float = TIMEOUT) -> str:
    """Keep the agent's bridge with a keeper (``Local/<keeper>/n``), name the agent on the
    caller (``variable`` = the agent's channel *name*: BridgeAdd finds its channel by name
    prefix, so a Uniqueid is never safe there — "1795.2" is a prefix of "1795.22", and a
    Local target "ivrx1-t" of its ;2 half "ivrx1-t-2"; seen on the switch when holding a
    caller after a warm transfer to a Local target) and redirect the caller to
    ``context,exten,1``. Returns the keeper's channel name (for :func:`hang_up`).
    Raises :class:`AmiError` or :class:`TimeoutError`; the caller is then still with the
    agent (or back with them through the dialplan)."""
    entered = waiters.expect(lambda e: e.get("Event") == "BridgeEnter" and e.get("Uniqueid") == keeper_id)
    await conn.action({
        "Action": "Originate", "Channel": f"Local/{keeper}/n", "Application": "BridgeAdd",
        "Data": agent, "ChannelId": keeper_id, "OtherChannelId": f"{keeper_id}-2",
        "Async": "true", "CallerID": caller_id}, timeout)
    keeper_name = str((await asyncio.wait_for(entered, timeout)).get("Channel", ""))
    await conn.action({"Action": "Setvar", "Channel": caller, "Variable": variable, "Value": agent},
                      timeout)
    await conn.action({"Action": "Redirect", "Channel": caller, "Context": context, "Exten": exten,
                       "Priority": "1"}, timeout)
    return keeper_name


async def hang_up(conn: AmiLink, keeper_name: str, keeper_id: str = "") -> None:
    """Hang the keeper up once the switch confirms it is there (a no-op if it never came,
    or is already gone: the agent hung up). By its Uniqueid (the ``ChannelId`` we gave it)
    when known: names are reused, our ids are not. So also when its name was never learnt
    (the caller's move failed after the keeper joined the agent's bridge)."""
    if not keeper_name and not keeper_id:
        return
    await hang_up_confirmed(conn, keeper_id or keeper_name, uniqueid=keeper_id, cause="16", why="keeper",
                            timeout=TIMEOUT)


async def rejoined(conn: AmiLink, waiters: EventWaiters, caller_uid: str, keeper_name: str,
                   timeout: float = TIMEOUT, keeper_id: str = "") -> bool:
    """After the caller's AGI ended: wait for the dialplan's BridgeAdd to put the caller
    back (its ``BridgeEnter``), then hang the keeper up. False if the return was not seen."""
    entered = waiters.expect(lambda e: e.get("Event") == "BridgeEnter" and e.get("Uniqueid") == caller_uid)
    seen = True
    try:
        await asyncio.wait_for(entered, timeout)
    except TimeoutError:
        seen = False
        log.error("away.rejoin_not_seen", caller_uid=caller_uid)
    await hang_up(conn, keeper_name, keeper_id)
    return seen
