"""R4 Hold: a reminder every 30 s, choices and an agent alert at 60 s, thanks on resume.

Per held party, from the moment hold starts (``t0``): a reminder at t0+30, +60, +90, ...
At ``choices_after`` (60 s) the caller is offered the choices (1 keep waiting, 2 leave a
message, 3 call-back) and the agent is alerted.

Decision: when the choices fall on a reminder instant (the default: 60 s), the choices
prompt is played *in place of* that reminder, not after it: the caller still hears
something every 30 s, and never two prompts back to back. That tick still counts, so
``OfferChoices.count`` is 2 and the next reminder (90 s) has count 3.

If ``on_timer`` is called late, missed ticks are not replayed one after the other: the
latest due tick is played once (its count says how many ticks have passed), and the
choices are still offered exactly once.

With ``announce`` (``[hold] announce``, on by default), the start is followed by
:class:`Announce`: "please hold, I will be back within one minute", the limit being
``choices_after`` rounded up to minutes (R4: give the caller a time limit). The reminders
are still timed from the start, not from the end of the announcement.

Every action has a ``state`` (start, announce, reminder, choices, resume, abandon, message,
callback, keep) for ``UserEvent: IvrHold`` with ``Count`` and ``HeldSeconds``.

What the held caller hears (or does) is queued in the machine as well as returned: the
caller's side asks :meth:`HoldTimer.next_action` for the one to play next, oldest first.
A thank-you wins over everything still waiting: resuming drops the waiting reminders,
choices prompt or choice, and nothing is queued after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ivr.rules.stage import seconds_ago, stage_time


@dataclass(frozen=True)
class HoldStarted:
    state: ClassVar[str] = "start"
    count: int = 0
    held_seconds: float = 0.0


@dataclass(frozen=True)
class Announce:
    """Play the hold announcement with the time limit (R4: give the caller a time limit):
    "please hold, I will be back within ``minutes`` minute(s)", the choices instant
    rounded up to whole minutes. Music follows; the reminders keep their times."""

    state: ClassVar[str] = "announce"
    minutes: int
    count: int = 0
    held_seconds: float = 0.0


@dataclass(frozen=True)
class Remind:
    """Play hold_reminder (music continues between reminders)."""

    state: ClassVar[str] = "reminder"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class OfferChoices:
    """Play hold_choices and listen for 1/2/3."""

    state: ClassVar[str] = "choices"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class AlertAgent:
    """Tell the agent that the caller has been held ``held_seconds``."""

    state: ClassVar[str] = "alert"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class KeepWaiting:
    state: ClassVar[str] = "keep"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class TakeMessage:
    """The caller pressed 2: leave hold, record a message (message_instructions)."""

    state: ClassVar[str] = "message"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class RequestCallback:
    """The caller pressed 3: leave hold, register a call-back, play callback_confirm."""

    state: ClassVar[str] = "callback"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class ThankCaller:
    """The agent resumed: play hold_thanks. No reminder ever after."""

    state: ClassVar[str] = "resume"
    count: int
    held_seconds: float


@dataclass(frozen=True)
class Abandoned:
    """The held party hung up."""

    state: ClassVar[str] = "abandon"
    count: int
    held_seconds: float


HoldAction = (
    HoldStarted | Announce | Remind | OfferChoices | AlertAgent | KeepWaiting | TakeMessage
    | RequestCallback | ThankCaller | Abandoned
)
MAX_ANNOUNCED_MINUTES = 5  # the prompt catalogs have hold_announce_1min .. _5min


def announce_minutes(choices_after: float) -> int:
    """The time limit the hold announcement promises: the choices instant (when the agent is
    alerted) rounded up to whole minutes, so the promise is never shorter than the truth."""
    minutes = max(1, math.ceil(choices_after / 60.0 - 1e-9))
    if minutes > MAX_ANNOUNCED_MINUTES:
        raise ValueError(f"hold.choices_after {choices_after} s is longer than the announcement "
                         f"can promise ({MAX_ANNOUNCED_MINUTES} min); set hold.announce = false")
    return minutes


# What the held caller hears or does (queued for :meth:`HoldTimer.next_action`), and of
# those, the ones that end the caller's hold (no music before them).
FOR_CALLER = (Announce, Remind, OfferChoices, KeepWaiting, TakeMessage, RequestCallback, ThankCaller)
LEAVES_HOLD = (TakeMessage, RequestCallback, ThankCaller)
_DIGITS: dict[str, type[KeepWaiting | TakeMessage | RequestCallback]] = {
    "1": KeepWaiting, "2": TakeMessage, "3": RequestCallback}


# What ends up on record of the held caller's choice (``hold.choice``): the states of the
# three actions the keys 1/2/3 lead to, and nothing else (the choice comes from caller DTMF).
HOLD_CHOICES: tuple[str, ...] = tuple(a.state for a in _DIGITS.values())  # keep, message, callback
# How a hold started (``HoldSession.via``, ``hold.start``'s ``via``): the agent's phone (AMI
# Hold), the agent's key (*8), the HTTP API; ``takeover`` only for a hold rebuilt from a stage
# an earlier version wrote, which did not keep the trigger.
HOLD_VIAS = ("phone", "feature", "api", "takeover")
_STAGE_FORM = "hold@<time>@<count>@<0|1>@<via>@<choice>"


@dataclass(frozen=True)
class HoldStage:
    """A hold's stage read back from the held caller's channel (:func:`parse_hold_stage`)."""

    start: str  # the start as written (unix time), the hold's records are timed by it
    age: float  # s since the start, never negative
    count: int  # reminder ticks played
    choices_offered: bool
    via: str  # how the hold started (HOLD_VIAS)
    choice: str  # "" or "keep": what the caller chose and the hold went on after


def hold_stage(started_at: str, count: int, choices_offered: bool, via: str, choice: str = "") -> str:
    """The hold's stage kept on the held caller's channel (IVR_STAGE) so that another
    controller can go on with it, and record it as it began:
    ``hold@<unix time of the start>@<ticks played>@<0|1>@<via>@<choice>`` (the start in a
    pair: the switch's clock at the latest, :meth:`ivr.agi.talk.SwitchClock.latest`, read
    back at its earliest, so the next reminder is never early). Only ``keep`` can
    be a choice there: a message or a call-back ends the hold (the stage is cleared first)."""
    return f"hold@{started_at}@{count}@{int(choices_offered)}@{via}@{choice}"


def parse_hold_stage(text: str, now: float, max_age: float = 86400.0) -> HoldStage:
    """Read :func:`hold_stage` back (a channel variable: hostile); raises ValueError naming
    what is wrong. A stage of four fields (an earlier version's, without the trigger and the
    choice) reads as via ``takeover`` and no choice."""
    parts = text.split("@")
    if len(parts) == 4:
        parts += ["takeover", ""]
    if len(parts) != 6 or parts[0] != "hold":
        raise ValueError(f"IVR_STAGE: not a hold stage ({_STAGE_FORM}), got {text[:60]!r}")
    _, at, count, choices, via, choice = parts
    start = stage_time(at, "hold start")
    if not count.isdigit() or len(count) > 6 or choices not in ("0", "1"):
        raise ValueError(f"IVR_STAGE: hold count must be a number and choices 0 or 1, got {text[:60]!r}")
    if via not in HOLD_VIAS:
        raise ValueError(f"IVR_STAGE: hold via must be one of {', '.join(HOLD_VIAS)}, got {via[:20]!r}")
    if choice not in ("", "keep") or (choice and choices != "1"):
        raise ValueError(f"IVR_STAGE: a held caller's choice can only be keep, after the choices, "
                         f"got {choice[:20]!r}")
    return HoldStage(at, seconds_ago(start, now, "hold start", max_age), int(count), choices == "1", via, choice)


class HoldTimer:
    """One held party. ``state``: idle, held, resumed, abandoned, message, callback."""

    @classmethod
    def resumed(cls, reminder_interval: float, choices_after: float, *, started: float, count: int,
                choices_offered: bool, now: float) -> HoldTimer:
        """A hold another controller ran since ``started`` (this clock), ``count`` ticks
        played: the next reminder comes when it would have, one that fell due meanwhile
        at once. A count or choices beyond what ``now`` allows are not believed."""
        timer = cls(reminder_interval, choices_after)
        timer.state, timer.started = "held", started
        timer.count = min(count, timer._ticks(now))
        timer.choices_offered = choices_offered and now >= started + choices_after
        return timer

    def __init__(self, reminder_interval: float = 30.0, choices_after: float = 60.0,
                 announce: bool = False) -> None:
        if reminder_interval <= 0 or choices_after <= 0:
            raise ValueError("hold intervals must be positive")
        self.reminder_interval = reminder_interval
        self.choices_after = choices_after
        self.announce = announce
        self.state = "idle"
        self.started: float | None = None
        self.count = 0  # reminder ticks passed (the choices tick included)
        self.choices_offered = False
        self.queue: list[HoldAction] = []  # for the held caller, oldest first

    def _queued(self, actions: list[HoldAction]) -> list[HoldAction]:
        self.queue += [a for a in actions if isinstance(a, FOR_CALLER)]
        return actions

    def next_action(self) -> HoldAction | None:
        """The action the held caller hears (or does) next, taken off the queue; None when
        nothing waits. (A thank-you is always alone: :meth:`resume` drops what waited.)"""
        return self.queue.pop(0) if self.queue else None

    @property
    def next_leaves_hold(self) -> bool:
        """The caller's next action ends the hold (thanks, message, call-back): no music
        should start before it."""
        return bool(self.queue) and isinstance(self.queue[0], LEAVES_HOLD)

    def _held(self, now: float) -> float:
        return now - (self.started if self.started is not None else now)

    def _tick_at(self, n: int) -> float:
        assert self.started is not None
        return self.started + n * self.reminder_interval

    def _ticks(self, now: float) -> int:
        """Reminder instants passed by ``now``, compared exactly as ``next_deadline``."""
        ticks = max(math.floor(self._held(now) / self.reminder_interval), 0)
        while now >= self._tick_at(ticks + 1):
            ticks += 1
        while ticks > 0 and now < self._tick_at(ticks):
            ticks -= 1
        return ticks

    @property
    def next_deadline(self) -> float | None:
        if self.state != "held" or self.started is None:
            return None
        deadline = self._tick_at(self.count + 1)
        if not self.choices_offered:
            deadline = min(deadline, self.started + self.choices_after)
        return deadline

    def start(self, now: float) -> list[HoldAction]:
        if self.state != "idle":
            return []
        self.state, self.started = "held", now
        if self.announce:
            return self._queued([HoldStarted(), Announce(announce_minutes(self.choices_after))])
        return [HoldStarted()]

    def on_timer(self, now: float) -> list[HoldAction]:
        if self.state != "held" or self.started is None:
            return []
        held = self._held(now)
        ticks = self._ticks(now)
        new_tick = ticks > self.count
        if new_tick:
            self.count = ticks
        if not self.choices_offered and now >= self.started + self.choices_after:
            self.choices_offered = True
            # the choices replace a reminder falling at the same instant
            return self._queued([OfferChoices(self.count, held), AlertAgent(self.count, held)])
        return self._queued([Remind(self.count, held)]) if new_tick else []

    def digit(self, now: float, digit: str) -> list[HoldAction]:
        """A DTMF digit from the held party; only 1/2/3 after the choices count."""
        if self.state != "held" or not self.choices_offered or digit not in _DIGITS:
            return []
        action = _DIGITS[digit](self.count, self._held(now))
        if digit != "1":
            self.state = action.state
        return self._queued([action])

    def resume(self, now: float) -> list[HoldAction]:
        if self.state != "held":
            return []
        self.state = "resumed"
        self.queue.clear()  # the agent is back: the thanks win over any reminder or choice waiting
        return self._queued([ThankCaller(self.count, self._held(now))])

    def hangup(self, now: float) -> list[HoldAction]:
        if self.state != "held":
            return []
        self.state = "abandoned"
        return [Abandoned(self.count, self._held(now))]
