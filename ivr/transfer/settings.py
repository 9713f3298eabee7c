"""What a transfer is: its settings (from the typed ``[transfer]``, ``[hold]``, ``[switch]``,
``[prompts]`` and ``[[agents]]``), one transfer in progress, and the error for a call that
cannot be transferred now."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivr.errors import IvrError
from ivr.rules.transfer import WarmTransfer
from ivr.sections import AgentConfig, HoldConfig, PromptsConfig, SwitchConfig, TransferConfig
from ivr.transfer.targets import Target


class CallNotTransferable(IvrError):
    """The call exists but cannot be transferred now (no agent on it, already transferring)."""

    error_id = "call-not-transferable"
    http_status = 409


_TRANSFER, _HOLD, _SWITCH, _PROMPTS = TransferConfig(), HoldConfig(), SwitchConfig(), PromptsConfig()


@dataclass(frozen=True)
class TransferSettings:
    sounds: str = f"{_PROMPTS.sound_prefix}/{_SWITCH.language}"  # sound path prefix of the caller's language
    ring_limit: float = _TRANSFER.ring_limit  # s the target may ring
    confirm_timeout: float = _TRANSFER.confirm_timeout  # s after the announcement to press 1
    announce_max: float = _TRANSFER.announce_max  # s the announcement may take
    remind_every: int = int(_HOLD.reminder_interval)  # s between reminders to the waiting caller (R4)
    agents: Mapping[str, str] = field(default_factory=dict)  # agent number -> dial string
    allow_dial: bool = False  # accept raw dial strings as targets (tests; see targets.py)
    # outside numbers allowed as targets (whole-number match); none: outside numbers refused
    allow_numbers: tuple[re.Pattern[str], ...] = ()

    @property
    def max_wait(self) -> int:
        """The dialplan's safety net: the caller's longest wait if the controller is gone."""
        return int(self.ring_limit + self.announce_max + self.confirm_timeout + 15)

    @classmethod
    def from_config(cls, transfer: TransferConfig, hold: HoldConfig, switch: SwitchConfig,
                    prompts: PromptsConfig, agents: Sequence[AgentConfig]) -> TransferSettings:
        """From ``[transfer]``, ``[hold] reminder_interval``, the caller's language and
        sound prefix, and ``[[agents]]``."""
        return cls(
            sounds=f"{prompts.sound_prefix}/{switch.language}",
            ring_limit=transfer.ring_limit,
            confirm_timeout=transfer.confirm_timeout,
            announce_max=transfer.announce_max,
            remind_every=int(hold.reminder_interval),
            agents={str(a.number): a.device for a in agents},
            allow_numbers=tuple(re.compile(p) for p in transfer.allow_numbers),
        )


@dataclass
class Transfer:
    id: str
    call_id: str  # Linkedid of the call
    caller: str  # Uniqueid of the caller's channel
    caller_channel: str
    caller_number: str
    agent: str  # Uniqueid of the transferring agent's channel ("" once gone)
    agent_channel: str
    agent_number: str
    target: Target
    target_uid: str  # our ChannelId for the target leg
    machine: WarmTransfer
    target_channel: str = ""
    answered_at: float | None = None
    outcome: str = ""
    # the ivr.once steps under which the target may be dialled, tried in order: a new
    # leader that knows the old one's Originate never reached the switch has a second
    dial_steps: tuple[str, ...] = ("dial",)

    def as_dict(self) -> dict[str, Any]:
        return {"transfer_id": self.id, "call_id": self.call_id, "caller": self.caller,
                "agent": self.agent_number, "target": self.target.label,
                "state": self.machine.state, "history": list(self.machine.history)}
