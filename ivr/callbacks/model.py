"""The call-backs feature's data: what may be dialled, the queue store it needs (a
protocol the records implement), its settings, and one attempt in flight."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ivr.ami.channels import device_of
from ivr.errors import IvrError
from ivr.rules.callback import (
    Callback,
    CallbackPolicy,
    Hours,
    LiveRule,
    parse_span,
)
from ivr.rules.dialing import MOH_CLASS, PHONE_RE
from ivr.sections import AgentConfig, CallbacksConfig, HoldConfig, PromptsConfig, SwitchConfig

log = structlog.get_logger("ivr.callbacks")


NUMBER = PHONE_RE  # what may be dialled: digits and a leading +
SOUNDS = re.compile(r"[A-Za-z0-9_./-]{1,200}")  # a sound path the dialplan may play (its own check is the same)
DIAL_OUTCOMES = {"NOANSWER": "no-answer", "BUSY": "busy", "CONGESTION": "busy", "CHANUNAVAIL": "busy",
                 "CANCEL": "agent-declined"}

Row = dict[str, Any]


class CallbackQueueStore(Protocol):
    """What the service needs of the durable store (``ivr.records.callbacks.CallbackQueue``)."""

    async def open(self) -> list[Row]: ...
    async def get(self, callback_id: str) -> Row | None: ...
    async def in_flight(self) -> list[Row]: ...
    async def recover(self, at: float | None = None, keep: Collection[str] = ()) -> int: ...
    async def start_attempt(self, callback_id: str, agent: str, at: float, *, channel: str | None = None,
                            node: str | None = None) -> str | None: ...
    async def finish_attempt(self, callback_id: str, attempt_id: str, *, outcome: str, status: str,
                             attempts: int, next_attempt: float | None, burned: bool, at: float) -> None: ...
    async def cancel(self, callback_id: str, at: float, reason: str = "cancelled") -> Row | None: ...
    async def retry_now(self, callback_id: str, at: float) -> Row | None: ...
    async def expire(self, callback_id: str, at: float) -> Row | None: ...
    async def create(self, *, phone: str, target: str, best_time: str, not_before: float, held_by: str | None,
                     call_id: str | None, at: float) -> Row | None: ...


_CB, _SWITCH, _PROMPTS, _HOLD = CallbacksConfig(), SwitchConfig(), PromptsConfig(), HoldConfig()


@dataclass(frozen=True)
class CallbackSettings:
    enabled: bool = _CB.enabled
    policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    agents: Mapping[str, str] = field(default_factory=dict)  # agent number -> dial string
    names: Mapping[str, str] = field(default_factory=dict)  # agent name -> number
    sounds: str = f"{_PROMPTS.sound_prefix}/{_SWITCH.language}"
    moh_class: str = _HOLD.moh_class  # the agent's music while the verdict is asked for again ([hold])
    tz: str = _SWITCH.timezone
    agent_ring: float = _CB.agent_ring
    agent_confirm: float = _CB.agent_confirm
    agent_reasks: int = _CB.agent_reasks
    agent_reask_interval: float = _CB.agent_reask_interval
    customer_ring: float = _CB.customer_ring
    live_timeout: float = _CB.live_timeout
    poll: float = _CB.poll
    live: LiveRule = field(default_factory=lambda: LiveRule(
        _CB.live_word_gap_ms, _CB.live_pause_ms, _CB.live_greeting_max_ms, _CB.live_min_word_ms))
    live_threshold: int = _CB.live_threshold

    @property
    def agent_variables(self) -> str:
        """The agent leg's channel variables besides its id (the Originate's ``Variable``):
        how often and how far apart ``[ivr-callback-agent]`` asks again for a verdict, the
        music class and the "one moment please" the agent hears meanwhile. Per call: an
        attempt adopted by another controller keeps what it was placed with."""
        bound = f"IVR_CB_REASKS={self.agent_reasks},IVR_CB_REASK_WAIT={self.agent_reask_interval:g}"
        # A value that could break the list (a comma) is left out: the dialplan's default
        # class (default); no sound path: the agent hears music only.
        music = f",IVR_CB_MOH={self.moh_class}" if MOH_CLASS.fullmatch(self.moh_class) else ""
        sounds = f",IVR_CB_SOUNDS={self.sounds}" if SOUNDS.fullmatch(self.sounds) else ""
        return bound + music + sounds

    @property
    def attempt_limit(self) -> float:
        """The longest an attempt may take before the controller gives it up (a lost
        event must not keep an agent "busy" for ever)."""
        asking_again = self.agent_reasks * (self.agent_reask_interval + 3)  # [ivr-agi]'s passes, the prompt
        return (self.agent_ring + 60 + asking_again + self.agent_confirm + self.customer_ring + 60
                + self.live_timeout + 30)

    def agent_number(self, label: str) -> str:
        """The agent number behind what the hold feature calls the agent (a number, a
        configured name or a device), else ``label`` itself."""
        if label in self.agents:
            return label
        for number, dial in self.agents.items():
            if label in (dial, device_of(dial)):
                return number
        return self.names.get(label, label)

    @classmethod
    def from_config(cls, cb: CallbacksConfig, switch: SwitchConfig, prompts: PromptsConfig,
                    agents: Sequence[AgentConfig], hold: HoldConfig = _HOLD) -> CallbackSettings:
        start, end = parse_span(cb.hours)
        return cls(
            enabled=cb.enabled,
            policy=CallbackPolicy(max_attempts=cb.max_attempts, backoff=tuple(cb.backoff),
                                  agent_retry=cb.agent_retry, hours=Hours(start, end, frozenset(cb.days))),
            agents={str(a.number): a.device for a in agents},
            names={a.name: str(a.number) for a in agents if a.name},
            sounds=f"{prompts.sound_prefix}/{switch.language}", moh_class=hold.moh_class, tz=switch.timezone,
            agent_ring=cb.agent_ring, agent_confirm=cb.agent_confirm, agent_reasks=cb.agent_reasks,
            agent_reask_interval=cb.agent_reask_interval, customer_ring=cb.customer_ring,
            live_timeout=cb.live_timeout, poll=cb.poll, live_threshold=cb.live_threshold,
            live=LiveRule(cb.live_word_gap_ms, cb.live_pause_ms, cb.live_greeting_max_ms, cb.live_min_word_ms))


def to_callback(row: Row) -> Callback:
    return Callback(
        id=str(row["callback_id"]), phone=str(row.get("phone") or ""), requested_at=float(row["at"]),
        next_attempt=float(row["next_attempt"] if row.get("next_attempt") is not None else row["at"]),
        attempts=int(row.get("attempts") or 0), target=str(row.get("target") or ""),
        held_by=str(row.get("held_by") or ""), best_time=str(row.get("best_time") or "today"),
        last_request=float(row["last_request"]) if row.get("last_request") is not None else None,
        status=str(row["status"]))


@dataclass
class Attempt:
    uid: str  # ChannelId of the agent's leg; IVR_CB_ID in the dialplan
    attempt_id: str
    callback: Callback
    call_id: str  # the original call
    agent: str
    device: str
    number: str
    done: asyncio.Future[str]
    agi: bool = False  # the agent answered (the announcement started)
    accepted: bool = False
    stages: list[str] = field(default_factory=list)
    adopted: bool = False  # placed by another controller (or before a restart), still on the switch

    def resolve(self, outcome: str) -> None:
        if not self.done.done():
            self.done.set_result(outcome)


class NoSuchCallback(IvrError):
    error_id = "no-such-callback"
    http_status = 404


class CallbacksUnavailable(IvrError):
    error_id = "callbacks-unavailable"
    http_status = 503


class InvalidCallback(IvrError):
    """A call-back request the API refuses; ``field`` names what is wrong."""

    error_id = "invalid-callback"
    http_status = 400
