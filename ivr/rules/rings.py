"""R1 Answer within three rings: ring counting by tone-zone cadence, and ring alarms.

A ring is one period of the ringing cadence; ring N starts at (N-1) periods after ringing
began. :class:`RingWatch` follows one ringing agent leg: it raises a ``warning`` alarm when
three periods have passed without answer (the fourth ring is starting) and a ``critical``
alarm at six, each exactly once, and on answer reports the ring count and whether the
caller must hear the apology (answered after more than six rings). The rings the caller
heard are counted from the call's first ring (``call_started``: rings of agents tried
before a re-route count too); this module is the only place that counts them and decides
the apology (:func:`answer_verdict`), the ring monitor only reads :attr:`RingWatch.answered`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# Ring cadences (ms on, ms off, ...) of common tone zones, from Asterisk's
# indications.conf.sample. ``Cadence.from_indications`` reads a real file instead.
TONE_ZONE_CADENCES: dict[str, tuple[int, ...]] = {
    "at": (1000, 5000),
    "au": (400, 200, 400, 2000),
    "be": (1000, 3000),
    "br": (1000, 4000),
    "ch": (1000, 4000),
    "cn": (1000, 4000),
    "de": (1000, 4000),
    "dk": (1000, 4000),
    "es": (1500, 3000),
    "fi": (1000, 4000),
    "fr": (1500, 3500),
    "gr": (1000, 4000),
    "in": (400, 200, 400, 2000),
    "it": (1000, 4000),
    "jp": (1000, 2000),
    "nl": (1000, 4000),
    "no": (1000, 4000),
    "nz": (400, 200, 400, 2000),
    "ru": (1000, 4000),
    "se": (1000, 5000),
    "sg": (400, 200, 400, 2000),
    "tw": (1000, 4000),
    "uk": (400, 200, 400, 2000),
    "us": (2000, 4000),
    "us-old": (2000, 4000),
}


@dataclass(frozen=True)
class Cadence:
    """A ringing cadence. ``extra`` holds any further on/off pairs (period = sum of all)."""

    on_ms: int
    off_ms: int
    extra: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if min((self.on_ms, self.off_ms, *self.extra)) < 0 or self.period <= 0:
            raise ValueError(f"invalid ring cadence {self.pattern!r}")

    @property
    def pattern(self) -> tuple[int, ...]:
        return (self.on_ms, self.off_ms, *self.extra)

    @property
    def period(self) -> float:
        """One ring, in seconds."""
        return sum(self.pattern) / 1000.0

    @classmethod
    def from_pattern(cls, values: tuple[int, ...] | list[int]) -> Cadence:
        values = [abs(int(v)) for v in values]
        if len(values) < 2:
            values.append(0)
        return cls(values[0], values[1], tuple(values[2:]))

    @classmethod
    def for_zone(cls, zone: str) -> Cadence:
        """The built-in cadence of a tone zone; ``KeyError`` if the zone is unknown."""
        return cls.from_pattern(TONE_ZONE_CADENCES[zone.lower()])

    @classmethod
    def from_indications(cls, text: str, zone: str) -> Cadence:
        """Parse ``ringcadence`` of ``[zone]`` from indications.conf text.

        Asterisk writes e.g. ``ringcadence = 1000,4000``; a negative value only marks a
        tone change, so absolute values are summed. ``KeyError`` if the zone or its
        ``ringcadence`` is missing.
        """
        section = None
        for raw in text.splitlines():
            line = raw.split(";", 1)[0].strip()
            if not line:
                continue
            header = re.fullmatch(r"\[([^\]]+)\]", line)
            if header:
                section = header.group(1).strip().lower()
                continue
            if section != zone.lower() or "=" not in line:
                continue
            key, _, value = line.partition("=")
            if key.strip().rstrip(">").strip().lower() == "ringcadence":
                numbers = [int(v) for v in re.findall(r"-?\d+", value)]
                if numbers:
                    return cls.from_pattern(numbers)
        raise KeyError(f"no ringcadence for tone zone {zone!r}")

    def ring_number(self, elapsed: float) -> int:
        """The ring sounding ``elapsed`` seconds after ringing began (the first is 1)."""
        return ring_number(elapsed, self.period)


def ring_number(elapsed: float, period: float) -> int:
    """floor(elapsed / period) + 1: ring N starts at (N-1) periods."""
    return math.floor(max(elapsed, 0.0) / period) + 1


def answer_verdict(cadence: Cadence, critical_rings: int, call_started: float, now: float) -> tuple[int, bool]:
    """Answered at ``now`` on a call whose caller began hearing ringing at ``call_started``:
    the ring the caller was hearing, and whether they must hear the apology first (more
    than ``critical_rings`` full rings have passed)."""
    elapsed = max(now - call_started, 0.0)
    return cadence.ring_number(elapsed), elapsed > critical_rings * cadence.period


@dataclass(frozen=True)
class RingAlarm:
    """The agent's device has rung ``rings`` full periods without answer."""

    level: str  # "warning" | "critical"
    rings: int
    elapsed: float


@dataclass(frozen=True)
class Reroute:
    """Move the call on (to ``target``, or the next agent/queue when empty)."""

    rings: int
    target: str = ""


@dataclass(frozen=True)
class Answered:
    """This leg was answered on its ring ``rings`` (``within_three``: before the warning).
    The caller heard ``call_rings`` rings on the call; ``late`` means they must hear
    ring_apology first (answered after more than ``critical_rings`` of them)."""

    rings: int
    within_three: bool
    late: bool
    elapsed: float
    call_rings: int = 0


@dataclass(frozen=True)
class NotAnswered:
    """Ringing ended without answer (``reason``: "noanswer", "hangup", "reroute", ...)."""

    rings: int
    reason: str
    elapsed: float


RingAction = RingAlarm | Reroute | Answered | NotAnswered


@dataclass
class RingWatch:
    """One ringing agent leg: ``start`` → (``on_timer``)* → ``answer`` | ``stop``."""

    cadence: Cadence
    warn_rings: int = 3
    critical_rings: int = 6
    reroute: bool = False
    reroute_target: str = ""
    started: float | None = None
    call_started: float | None = None  # the call's first ring (an earlier agent's), else started
    state: str = "idle"  # idle | ringing | answered | stopped
    raised: set[str] = field(default_factory=set)
    answered: Answered | None = None  # the decision, once answered

    def __post_init__(self) -> None:
        if not 0 < self.warn_rings <= self.critical_rings:
            raise ValueError("need 0 < warn_rings <= critical_rings")

    def _thresholds(self) -> list[tuple[str, int]]:
        return [("warning", self.warn_rings), ("critical", self.critical_rings)]

    def _due_at(self, rings: int) -> float:
        assert self.started is not None
        return self.started + rings * self.cadence.period

    def start(self, now: float, call_started: float | None = None) -> list[RingAction]:
        """Ringing began at ``now``; the caller has heard ringing since ``call_started``
        (an earlier leg of the same call), or since ``now``."""
        if self.state != "idle":
            return []
        self.started, self.state = now, "ringing"
        self.call_started = min(now, call_started) if call_started is not None else now
        return []

    @property
    def next_deadline(self) -> float | None:
        if self.state != "ringing":
            return None
        pending = [self._due_at(n) for level, n in self._thresholds() if level not in self.raised]
        return min(pending) if pending else None

    def _due_alarms(self, now: float, allow_reroute: bool) -> list[RingAction]:
        assert self.started is not None
        actions: list[RingAction] = []
        for level, rings in self._thresholds():
            if level in self.raised or now < self._due_at(rings):
                continue
            self.raised.add(level)
            actions.append(RingAlarm(level, rings, now - self.started))
            if level == "warning" and self.reroute and allow_reroute:
                actions.append(Reroute(rings, self.reroute_target))
        return actions

    def on_timer(self, now: float) -> list[RingAction]:
        if self.state != "ringing":
            return []
        return self._due_alarms(now, allow_reroute=True)

    def answer(self, now: float) -> list[RingAction]:
        """The agent answered. Alarms that fell due unseen are raised first."""
        if self.state != "ringing" or self.started is None:
            return []
        actions = self._due_alarms(now, allow_reroute=False)
        self.state = "answered"
        elapsed = now - self.started
        rings = self.cadence.ring_number(elapsed)
        call_started = self.call_started if self.call_started is not None else self.started
        call_rings, late = answer_verdict(self.cadence, self.critical_rings, call_started, now)
        self.answered = Answered(rings, now < self._due_at(self.warn_rings), late, elapsed, call_rings)
        actions.append(self.answered)
        return actions

    def stop(self, now: float, reason: str = "noanswer") -> list[RingAction]:
        """Ringing ended without answer (no answer, caller hang-up, rerouted)."""
        if self.state != "ringing" or self.started is None:
            return []
        actions = self._due_alarms(now, allow_reroute=False)
        self.state = "stopped"
        elapsed = now - self.started
        actions.append(NotAnswered(self.cadence.ring_number(elapsed), reason, elapsed))
        return actions
