"""What one hold is made of: the hold errors, :class:`HoldSettings` (from the typed
``[hold]`` section; its defaults are the section's), one :class:`HoldSession` per held
caller, and the switch names the hold dialplan (asterisk/ivr-hold.conf) shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ivr import errors
from ivr.agi.wake import WAKE_DIGIT
from ivr.ami.away import AwaySession, AwaySettings
from ivr.errors import IvrError
from ivr.rules.callback import Window, parse_window
from ivr.rules.hold import HoldTimer, announce_minutes
from ivr.sections import AgentConfig, CallbacksConfig, HoldConfig, PromptsConfig, SwitchConfig

HOLD_CONTEXT = "ivr-hold"
WAKE = WAKE_DIGIT  # the digit the controller "receives" on the held channel to wake its AGI
CHOICE_DIGITS = "123"
WAIT_SLICE_MS = 2000  # a lost wake-up costs at most this much
KEEPER_TIMEOUT = 5.0


class HoldError(IvrError):
    error_id = "hold-failed"
    status = 409


class NoSuchCall(errors.NoSuchCall, HoldError):
    """The one API-wide ``no-such-call`` (its id and 404 come first), also a hold error
    (callers of the hold service catch HoldError)."""


class NotHeld(HoldError):
    error_id = "not-on-hold"
    status = 409


_HOLD, _SWITCH, _CB = HoldConfig(), SwitchConfig(), CallbacksConfig()  # the defaults


@dataclass(frozen=True, kw_only=True)
class HoldSettings(AwaySettings):
    """``[hold]``; the language, prompt prefix and agents are :class:`AwaySettings`'."""

    reminder_interval: float = _HOLD.reminder_interval
    choices_after: float = _HOLD.choices_after
    announce: bool = _HOLD.announce
    moh_class: str = _HOLD.moh_class
    messages_dir: Path = Path(_HOLD.messages_dir)
    switch_messages_dir: str = ""  # the same directory as Asterisk sees it ("" = same path)
    message_max_seconds: int = _HOLD.message_max_seconds
    message_silence_seconds: int = 3
    # after 3 (a call-back): the best times offered, keys 1.. ([callbacks] windows)
    callback_windows: tuple[Window, ...] = tuple(parse_window(w) for w in _CB.windows)
    callback_window_timeout: float = _CB.window_timeout
    timezone: str = _SWITCH.timezone  # the windows are the switch's local time

    @classmethod
    def from_config(cls, hold: HoldConfig, switch: SwitchConfig, prompts: PromptsConfig,
                    agents: Sequence[AgentConfig], *,
                    switch_path: Callable[[Path], str] | None = None,
                    callbacks: CallbacksConfig = _CB) -> HoldSettings:
        """From ``[hold]``, ``[switch] language``, ``[prompts] sound_prefix`` and
        ``[[agents]]``. ``switch_path`` maps the messages directory to Asterisk's view
        (the embedded switch runs in a chroot; the app passes the mapping in)."""
        messages_dir = Path(hold.messages_dir)
        return cls(
            reminder_interval=hold.reminder_interval,
            choices_after=hold.choices_after,
            announce=hold.announce,
            moh_class=hold.moh_class,
            messages_dir=messages_dir,
            switch_messages_dir=switch_path(messages_dir) if switch_path else "",
            message_max_seconds=hold.message_max_seconds,
            **cls.shared(switch, prompts, agents),
            callback_windows=tuple(parse_window(w) for w in callbacks.windows),
            callback_window_timeout=callbacks.window_timeout, timezone=switch.timezone,
        )

    def __post_init__(self) -> None:
        if self.announce:
            announce_minutes(self.choices_after)  # ValueError at start-up if it cannot be said

    def timer(self) -> HoldTimer:
        return HoldTimer(self.reminder_interval, self.choices_after, self.announce)

    @property
    def announce_prompt(self) -> str:
        return f"hold_announce_{announce_minutes(self.choices_after)}min"


@dataclass(kw_only=True)
class HoldSession(AwaySession):
    """One held caller (``via``: phone, feature, api, as :data:`~ivr.rules.hold.HOLD_VIAS`;
    ``ended``: resume, abandon, message, callback, agent_left, failed)."""

    timer: HoldTimer
    since: str  # the start, unix time as IVR_STAGE keeps it and the records time the hold
    on_switch: bool = False  # ``since`` is the switch's time (in a pair: fixed at the route's first start)
    choice: str = ""  # "keep" once the caller chose to wait on (kept in IVR_STAGE)
    agent_left: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, str]:
        return ("hold", self.caller.uniqueid)
