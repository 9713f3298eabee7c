"""R3 A line too faint or too noisy: ask to speak up, ask again, then goodbye and release.

Started by the agent (key or API) with a reason, ``faint`` or ``noisy``. From then on::

    ask ─finished→ pause1 (5 s) → ask-again ─finished→ pause2 (5 s)
        → goodbye (faint / noisy wording) ─finished→ pause3 (5 s) → released

As in :mod:`ivr.rules.silent`, a pause starts only when its prompt has *finished*
playing, so a late timer can only delay the script: the release is never sooner than 5 s
after the goodbye prompt ended. Clear speech from the caller at any moment before the
release returns the caller to the agent (:class:`ReturnToAgent`), and so does the agent
taking the caller back (their key again, or the API); a hang-up ends the
script with nothing more to do. What "clear" means on the audio is the I/O layer's
measurement (:mod:`ivr.unclear.service`); this machine only hears that it happened.

Every action carries its ``stage`` for ``UserEvent: IvrUnclearLine`` (``Stage``): ask,
ask-again, goodbye, release, returned.

Where the script is, kept on the caller's channel (``IVR_STAGE``, :func:`unclear_stage`)
so that another controller goes on with it when this one dies (issue 17):
``unclear@<start>@<reason>@<state>@<since>``, the script's start and the moment the state
began (unix times), the state one of ask (the first prompt, played again in full on the
next node) or a pause (pause1, pause2, pause3: it ends when it would have).
"""

from __future__ import annotations

from dataclasses import dataclass

REASONS = ("faint", "noisy")


@dataclass(frozen=True)
class Say:
    """Play ``prompt`` to the caller; ``stage`` is ask | ask-again | goodbye."""

    prompt: str
    stage: str


@dataclass(frozen=True)
class Release:
    """Hang up: 5 s after the goodbye prompt ended, the line was still unclear."""

    stage: str = "release"


@dataclass(frozen=True)
class ReturnToAgent:
    """Back to the agent. ``during``: the stage the caller was in; ``by``: "speech" (the
    caller spoke clearly) or "agent" (the agent took the caller back)."""

    during: str
    by: str = "speech"
    stage: str = "returned"


UnclearAction = Say | Release | ReturnToAgent

# (prompt playing, pause after it, next stage or None for the release)
_SCRIPT: tuple[tuple[str, str, str | None], ...] = (
    ("ask", "pause1", "ask-again"),
    ("ask-again", "pause2", "goodbye"),
    ("goodbye", "pause3", None),
)
TERMINAL = frozenset({"released", "returned", "hungup"})
KEPT = ("ask", "pause1", "pause2", "pause3")  # the states written to IVR_STAGE
MAX_STAGE_AGE = 3600.0  # s: an older stage is not this script's
MAX_STAGE_SKEW = 5.0  # s a time may lie in the future (another node's clock)


def unclear_stage(started: str, reason: str, state: str, since: float) -> str:
    """What the caller's route writes to IVR_STAGE: ``unclear@<start>@<reason>@<state>@<since>``."""
    if reason not in REASONS or state not in KEPT:
        raise ValueError(f"not an unclear-line stage: {reason!r} {state!r}")
    return f"unclear@{started}@{reason}@{state}@{since:.3f}"


def _unix(text: str, what: str) -> float:
    if not text or len(text) > 20 or text.count(".") > 1 or not text.replace(".", "").isdigit():
        raise ValueError(f"IVR_STAGE: the unclear-line {what} must be seconds since 1970, got {text[:40]!r}")
    return float(text)


def parse_unclear_stage(text: str, now: float) -> tuple[str, str, str, float]:
    """Read :func:`unclear_stage` back (a channel variable: hostile). Returns the start as
    written, the reason, the state and how long ago it began (s, never negative); raises
    ValueError naming what is wrong."""
    parts = text.split("@")
    if len(parts) != 5 or parts[0] != "unclear":
        raise ValueError(f"IVR_STAGE: not an unclear-line stage "
                         f"(unclear@<start>@<reason>@<state>@<since>), got {text[:60]!r}")
    _, started, reason, state, since_text = parts
    if reason not in REASONS:
        raise ValueError(f"IVR_STAGE: the unclear-line reason must be one of {', '.join(REASONS)}, "
                         f"got {reason[:20]!r}")
    if state not in KEPT:
        raise ValueError(f"IVR_STAGE: the unclear-line state must be one of {', '.join(KEPT)}, got {state[:20]!r}")
    start, since = _unix(started, "start"), _unix(since_text, "stage time")
    if since < start - MAX_STAGE_SKEW:
        raise ValueError("IVR_STAGE: the unclear-line stage began before the script did")
    for at in (start, since):
        if not -MAX_STAGE_SKEW <= now - at <= MAX_STAGE_AGE:
            raise ValueError(f"IVR_STAGE: the unclear-line time is {now - at:.0f} s from now, not this "
                             f"script's (at most {MAX_STAGE_AGE:.0f} s ago)")
    return started, reason, state, max(now - since, 0.0)


def prompt_of(stage: str, reason: str) -> str:
    """The prompt id of a stage: unclear_ask (ask and ask-again), unclear_goodbye_<reason>."""
    return f"unclear_goodbye_{reason}" if stage == "goodbye" else "unclear_ask"


class UnclearLine:
    """The unclear-line script of one caller.

    ``state``: idle, then ask, pause1, ask-again, pause2, goodbye, pause3 while it runs;
    released, returned, hungup (terminal).
    """

    def __init__(self, reason: str, pause: float = 5.0) -> None:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, not {reason!r}")
        if pause <= 0:
            raise ValueError("pause must be positive")
        self.reason, self.pause = reason, pause
        self.state = "idle"
        self.pause_started: float | None = None
        self.prompt_ended: dict[str, float] = {}  # stage -> when its prompt finished

    @classmethod
    def resumed(cls, reason: str, pause: float, state: str, age: float, now: float) -> UnclearLine:
        """The script another controller ran up to ``state`` (one of :data:`KEPT`), begun
        ``age`` s ago (this clock's ``now``): a pause ends when it would have (at once if
        that is past), never sooner; ``ask`` is played again by :meth:`start`."""
        line = cls(reason, pause)
        if state in ("pause1", "pause2", "pause3"):
            line.state, line.pause_started = state, now - max(age, 0.0)
        return line

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def next_deadline(self) -> float | None:
        if self.state.startswith("pause") and self.pause_started is not None:
            return self.pause_started + self.pause
        return None

    def _say(self, stage: str) -> list[UnclearAction]:
        self.state = stage
        return [Say(prompt_of(stage, self.reason), stage)]

    def start(self, now: float) -> list[UnclearAction]:
        """The caller has left the agent: ask them to speak up."""
        return self._say("ask") if self.state == "idle" else []

    def prompt_finished(self, now: float, stage: str | None = None) -> list[UnclearAction]:
        """The prompt of ``stage`` (default: the current one) has played to its end."""
        for playing, pause, _ in _SCRIPT:
            if self.state == playing and stage in (None, playing):
                self.state, self.pause_started = pause, now
                self.prompt_ended[playing] = now
                return []
        return []  # stale or duplicate

    def on_timer(self, now: float) -> list[UnclearAction]:
        deadline = self.next_deadline
        if deadline is None or now < deadline:
            return []
        for _, pause, following in _SCRIPT:
            if self.state == pause:
                self.pause_started = None
                if following is None:
                    self.state = "released"
                    return [Release()]
                return self._say(following)
        return []

    def clear_speech(self, now: float) -> list[UnclearAction]:
        """The caller spoke clearly: back to the agent, whatever the stage."""
        return self._return("speech")

    def agent_takes_back(self, now: float) -> list[UnclearAction]:
        """The agent takes the caller back (their key again, or the API), whatever the stage."""
        return self._return("agent")

    def _return(self, by: str) -> list[UnclearAction]:
        if self.done:
            return []
        during, self.state = self.state, "returned"
        return [ReturnToAgent(during, by)]

    def hangup(self, now: float) -> list[UnclearAction]:
        if not self.done:
            self.state = "hungup"
        return []
