"""Call-backs the switch places itself: which one is due, and what an attempt's outcome
does to it. Pure: times are arguments (``now`` as seconds since the epoch and as the
switch's local :class:`~datetime.datetime`), nothing here reads a clock.

Place in line: the time of the caller's first request (a second request for the same
number and target keeps it). A call-back is *callable* when its next attempt is due, the
switch is inside business hours and the caller's best time (``today``: until the end of
the local day of the latest request; ``HH:MM-HH:MM``: that window every day). The first
callable call-back in line that has a free agent is placed: its target agent; else (any
agent, or a queue: then only the queue's members) the agent who held the caller, else the
first free one. A call-back waiting for a busy
agent does not hold up those behind it.

Outcomes of an attempt::

    connected                    -> done
    no-answer | busy | machine | -> the customer's attempt is used: retried after
    no-live-answer                  backoff[n-1] (the last repeats), failed after
                                    max_attempts
    agent-declined |             -> not the customer's fault: the attempt is not counted,
    agent-no-answer | agent-busy    retried after agent_retry
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

CUSTOMER_OUTCOMES = frozenset({"no-answer", "busy", "machine", "no-live-answer"})
AGENT_OUTCOMES = frozenset({"agent-declined", "agent-no-answer", "agent-busy"})
OUTCOMES = CUSTOMER_OUTCOMES | AGENT_OUTCOMES | {"connected"}
OPEN = "open"  # waiting for its next attempt
DIALLING = "dialling"  # an attempt is under way
FINAL = frozenset({"done", "failed", "cancelled", "expired", "merged"})

_HHMM = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def minute_of(text: str) -> int:
    """``"09:30"`` -> 570; ``"24:00"`` -> 1440. ValueError otherwise."""
    m = _HHMM.match(text.strip())
    if m is None or (int(m.group(1)) == 24 and m.group(2) != "00"):
        raise ValueError(f"{text!r} is not a time HH:MM")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_span(text: str) -> tuple[int, int]:
    """``"09:00-18:00"`` -> (540, 1080); the end after the start. ValueError otherwise."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not a span HH:MM-HH:MM")
    span = minute_of(start), minute_of(end)
    if span[1] <= span[0]:
        raise ValueError(f"{text!r}: the end must be after the start")
    return span


@dataclass(frozen=True)
class Hours:
    """Business hours: ``start`` to ``end`` (minutes of the local day) on ``days``
    (ISO weekdays, Monday = 1)."""

    start: int = 9 * 60
    end: int = 20 * 60
    days: frozenset[int] = frozenset(range(1, 8))

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return local.isoweekday() in self.days and self.start <= minute < self.end


@dataclass(frozen=True)
class CallbackPolicy:
    max_attempts: int = 3  # customer attempts (no answer, busy, machine, no live answer) before "failed"
    backoff: tuple[float, ...] = (600.0, 1800.0, 3600.0)  # s after the 1st, 2nd, ... used attempt
    agent_retry: float = 60.0  # s after an agent declined or did not answer
    hours: Hours = field(default_factory=Hours)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not self.backoff or min(self.backoff) < 0 or self.agent_retry < 0:
            raise ValueError("max_attempts >= 1, a non-empty backoff and waits >= 0 are required")


@dataclass(frozen=True)
class Callback:
    """What the scheduler needs of one stored call-back."""

    id: str
    phone: str
    requested_at: float  # the original call: its place in line
    next_attempt: float
    attempts: int = 0
    target: str = ""  # an agent number, "queue:NAME" or "" (any agent)
    held_by: str = ""  # the agent who held the caller (preferred when free)
    best_time: str = "today"  # "today" or "HH:MM-HH:MM"
    last_request: float | None = None  # the latest request (``today`` counts from it)
    status: str = OPEN


def in_line(callbacks: Iterable[Callback]) -> list[Callback]:
    """Open call-backs in their place in line (first request first)."""
    return sorted((c for c in callbacks if c.status == OPEN), key=lambda c: (c.requested_at, c.id))


def expired(cb: Callback, local: datetime) -> bool:
    """A ``today`` call-back whose day (of its latest request, in ``local``'s zone) is over."""
    if cb.status != OPEN or cb.best_time.strip().lower() != "today":
        return False
    asked = datetime.fromtimestamp(cb.last_request or cb.requested_at, local.tzinfo)
    end_of_day = datetime.combine(asked.date() + timedelta(days=1), datetime.min.time(), local.tzinfo)
    return local >= end_of_day


def in_window(cb: Callback, local: datetime) -> bool:
    text = cb.best_time.strip().lower()
    if text in ("", "today", "any"):
        return True
    try:
        start, end = parse_span(text)
    except ValueError:
        return True  # an unreadable best time never strands a call-back
    minute = local.hour * 60 + local.minute
    return start <= minute < end


def callable_now(cb: Callback, now: float, local: datetime, policy: CallbackPolicy) -> bool:
    return (cb.status == OPEN and cb.next_attempt <= now and policy.hours.contains(local)
            and in_window(cb, local) and not expired(cb, local))


def choose_agent(cb: Callback, free: Sequence[str],
                 members: Mapping[str, Collection[str]] | None = None) -> str | None:
    """The agent to ring first: the target agent; for a ``queue:NAME`` target a free member
    of that queue (``members``: queue name -> agent numbers the switch has in it, paused
    ones left out; a queue not in it has nobody now); the agent who held the caller
    before any other when eligible."""
    if cb.target and not cb.target.startswith("queue:"):
        return cb.target if cb.target in free else None
    if cb.target:
        queue = set((members or {}).get(cb.target.removeprefix("queue:"), ()))
        free = [a for a in free if a in queue]
    if cb.held_by and cb.held_by in free:
        return cb.held_by
    return free[0] if free else None


@dataclass(frozen=True)
class Assignment:
    callback: Callback
    agent: str


def pick(callbacks: Iterable[Callback], now: float, local: datetime, free: Sequence[str],
         policy: CallbackPolicy, members: Mapping[str, Collection[str]] | None = None) -> Assignment | None:
    """The call-back to place now and the agent to ring first, or None."""
    for cb in in_line(callbacks):
        if not callable_now(cb, now, local, policy):
            continue
        agent = choose_agent(cb, free, members)
        if agent is not None:
            return Assignment(cb, agent)
    return None


@dataclass(frozen=True)
class AfterAttempt:
    status: str
    attempts: int
    next_attempt: float | None
    burned: bool  # the customer's attempt was used


def after_attempt(cb: Callback, outcome: str, now: float, policy: CallbackPolicy) -> AfterAttempt:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    if outcome == "connected":
        return AfterAttempt("done", cb.attempts + 1, None, burned=True)
    if outcome in AGENT_OUTCOMES:
        return AfterAttempt(OPEN, cb.attempts, now + policy.agent_retry, burned=False)
    used = cb.attempts + 1
    if used >= policy.max_attempts:
        return AfterAttempt("failed", used, None, burned=True)
    wait = policy.backoff[min(used, len(policy.backoff)) - 1]
    return AfterAttempt(OPEN, used, now + wait, burned=True)


def next_opportunity(cb: Callback, now: float, local: datetime, policy: CallbackPolicy) -> float | None:
    """When the call-back can next be placed (an agent permitting): its next attempt, moved
    into business hours and the caller's window; None when it never can again (a ``today``
    call-back past its day, or no opening within a week). ``local`` is ``now`` in the
    switch's zone."""
    if cb.status != OPEN:
        return None
    tz = local.tzinfo
    start = datetime.fromtimestamp(max(now, cb.next_attempt), tz)
    span = (policy.hours.start, policy.hours.end)
    text = cb.best_time.strip().lower()
    if text not in ("", "today", "any"):
        try:
            w = parse_span(text)
            span = (max(span[0], w[0]), min(span[1], w[1]))
        except ValueError:
            pass
    if span[1] <= span[0]:
        return None
    for offset in range(8):
        day = start.date() + timedelta(days=offset)
        midnight = datetime.combine(day, datetime.min.time(), tz)
        if midnight.isoweekday() not in policy.hours.days:
            continue
        opens, closes = midnight + timedelta(minutes=span[0]), midnight + timedelta(minutes=span[1])
        at = max(start, opens)
        if at < closes:
            if expired(cb, at):
                return None
            return max(now, cb.next_attempt) if at == start else at.timestamp()  # exact, not to the µs
    return None


# -- the caller's choice of a best time (after pressing 3 at the hold choices) ---------------

ASAP = "asap"


@dataclass(frozen=True)
class Window:
    """A best time offered to the caller: ``asap`` (as soon as possible today), or
    ``HH:00-HH:00`` (the next such window: today if it has not ended yet, else tomorrow),
    or ``tomorrow HH:00-HH:00``. Whole hours, so the window can be said back."""

    text: str
    start: int = 0  # minutes of the local day
    end: int = 0
    tomorrow: bool = False

    @property
    def asap(self) -> bool:
        return self.text == ASAP


def parse_window(text: str, *, whole_hours: bool = True) -> Window:
    """One window (see :class:`Window`; ``today`` is ``asap``). ValueError with what is
    wrong. ``whole_hours``: the window is said to the caller (the menu), so on the hour."""
    t = " ".join(text.strip().lower().split())
    if t in (ASAP, "today"):
        return Window(ASAP)
    tomorrow = t.startswith("tomorrow ")
    span = t.removeprefix("tomorrow ") if tomorrow else t
    try:
        start, end = parse_span(span)
    except ValueError as exc:
        raise ValueError(f"{text!r}: a window is 'asap', 'HH:00-HH:00' or 'tomorrow HH:00-HH:00' ({exc})") from None
    if whole_hours and (start % 60 or end % 60):
        raise ValueError(f"{text!r}: a window starts and ends on the hour (it is said back to the caller)")
    return Window(t, start, end, tomorrow)


@dataclass(frozen=True)
class ChosenWindow:
    window: Window
    best_time: str  # as stored: "today" or "HH:MM-HH:MM"
    not_before: float  # epoch s: no attempt before (the window's opening)
    day: str  # "today" or "tomorrow": as said to the caller


def plan_window(window: Window, local: datetime) -> ChosenWindow:
    """The call-back a choice made at ``local`` (the switch's local time) asks for."""
    if window.asap:
        return ChosenWindow(window, "today", local.timestamp(), "today")
    minute = local.hour * 60 + local.minute
    offset = 1 if window.tomorrow or minute >= window.end else 0
    midnight = datetime.combine(local.date() + timedelta(days=offset), datetime.min.time(), local.tzinfo)
    opens = max(local, midnight + timedelta(minutes=window.start))
    best = "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in (window.start, window.end))
    return ChosenWindow(window, best, opens.timestamp(), "tomorrow" if offset else "today")


def describe(chosen: ChosenWindow) -> list[str]:
    """Prompt ids naming the window: "today between 2 p.m. and 8 p.m." (asap: its own)."""
    w = chosen.window
    if w.asap:
        return ["callback_asap"]
    return [f"callback_{chosen.day}", "callback_from", f"hour_{w.start // 60}", "callback_to", f"hour_{w.end // 60}"]


def window_menu(windows: Sequence[Window], local: datetime) -> list[str]:
    """The menu after pressing 3: "when should we call you back? <window>, press 1; ..."."""
    prompts = ["callback_when"]
    for key, w in enumerate(windows, 1):
        prompts += [*describe(plan_window(w, local)), "callback_menu_press", f"digit_{key}"]
    return prompts


def window_said_back(chosen: ChosenWindow) -> list[str]:
    """What the caller hears once the call-back is registered."""
    if chosen.window.asap:
        return ["callback_confirm"]
    return ["callback_will", *describe(chosen), "callback_end"]


def window_for_key(windows: Sequence[Window], digit: str | None) -> Window | None:
    """The window of an offered key; None for a timeout or a key not offered."""
    if digit and digit.isdigit() and 1 <= int(digit) <= len(windows):
        return windows[int(digit) - 1]
    return None


# -- a live answer: the customer's key, or speech the way a person answers -------------------

HUMAN, MACHINE = "human", "machine"


@dataclass(frozen=True)
class LiveRule:
    """How an answered customer's speech is told apart (TALK_DETECT bursts: a *burst* is
    speech that ends after ``word_gap_ms`` of quiet; Asterisk reports its length without
    that quiet). A person says a short greeting ("hello?") and waits: speech of at least
    ``min_word_ms`` and at most ``greeting_max_ms`` in all, then ``pause_ms`` of quiet:
    :data:`HUMAN`. An answering machine talks on: more than ``greeting_max_ms`` of speech
    before such a pause (a burst still running counts as it goes): :data:`MACHINE`.
    Bursts shorter than ``min_word_ms`` (a click, a breath) are not speech. The defaults
    are ``[callbacks] live_*`` (ivr/sections.py)."""

    word_gap_ms: int
    pause_ms: int
    greeting_max_ms: int
    min_word_ms: int

    def __post_init__(self) -> None:
        if not 20 <= self.word_gap_ms <= self.pause_ms:
            raise ValueError(f"live_word_gap_ms must be 20..live_pause_ms ({self.pause_ms}), got {self.word_gap_ms}")
        if not 0 <= self.min_word_ms < self.greeting_max_ms:
            raise ValueError(f"live_min_word_ms must be 0..live_greeting_max_ms ({self.greeting_max_ms}), "
                             f"got {self.min_word_ms}")


class LiveAnswer:
    """One answered customer's speech, from TALK_DETECT bursts; times are seconds on one
    clock (the caller's), passed in. :meth:`decide` gives the verdict once it is known
    (it never changes after), :meth:`deadline` when it may next change with no new burst."""

    def __init__(self, rule: LiveRule) -> None:
        self.rule = rule
        self.spoken_ms = 0  # speech heard so far, ended bursts only
        self.talking_since: float | None = None  # a burst under way
        self.quiet_since: float | None = None  # the end of the last word
        self.bursts: list[int] = []  # every ended burst's length (ms), noise included
        self.verdict: str | None = None

    def talk_start(self, at: float) -> None:
        if self.verdict is None and self.talking_since is None:
            self.talking_since = at

    def talk_stop(self, at: float, duration_ms: int) -> None:
        self.bursts.append(duration_ms)
        if self.verdict is not None:
            return
        self.talking_since = None
        if duration_ms < self.rule.min_word_ms:
            return  # not speech: the quiet before it goes on
        self.spoken_ms += duration_ms
        self.quiet_since = at - self.rule.word_gap_ms / 1000
        if self.spoken_ms > self.rule.greeting_max_ms:
            self.verdict = MACHINE

    def _running_ms(self, now: float) -> float:
        return 0.0 if self.talking_since is None else max(0.0, now - self.talking_since) * 1000

    def decide(self, now: float) -> str | None:
        r = self.rule
        if self.verdict is None:
            if self.spoken_ms + self._running_ms(now) > r.greeting_max_ms:
                self.verdict = MACHINE
            elif (self.talking_since is None and self.quiet_since is not None
                  and round((now - self.quiet_since) * 1000, 6) >= r.pause_ms):  # to the ns: float noise
                self.verdict = HUMAN
        return self.verdict

    def deadline(self) -> float | None:
        """When :meth:`decide` may give a verdict without another burst; None: only a burst can."""
        if self.verdict is not None:
            return None
        if self.talking_since is not None:
            return self.talking_since + (self.rule.greeting_max_ms - self.spoken_ms) / 1000
        if self.quiet_since is not None:
            return self.quiet_since + self.rule.pause_ms / 1000
        return None
