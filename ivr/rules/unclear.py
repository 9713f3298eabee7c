"""R3 A line too faint or too noisy: ask to speak up, ask again, then goodbye and release.

Started by the agent (key or API) with a reason, ``faint`` or ``noisy``. From then on::

    ask ─finished→ pause1 (5 s) → ask-again ─finished→ pause2 (5 s)
        → goodbye (faint / noisy wording) ─finished→ pause3 (5 s) → released

As in :mod:`ivr.rules.silent` (the same walk: :class:`ivr.rules.script.PausedScript`), a
pause starts only when its prompt has *finished* playing, so a late timer can only delay
the script: the release is never sooner than 5 s after the goodbye prompt ended. Clear
speech from the caller at any moment before the release returns the caller to the agent
(:class:`ReturnToAgent`), and so does the agent taking the caller back (their key again,
or the API); a hang-up ends the script with nothing more to do. What "clear" means on the audio is the I/O layer's
measurement (:mod:`ivr.unclear.caller`); this machine only hears that it happened.

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

from ivr.rules.script import PausedScript
from ivr.rules.stage import MAX_SKEW, seconds_ago, stage_time, stamp

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

KEPT = ("ask", "pause1", "pause2", "pause3")  # the states written to IVR_STAGE


def unclear_stage(started: str, reason: str, state: str, since: float) -> str:
    """What the caller's route writes to IVR_STAGE: ``unclear@<start>@<reason>@<state>@<since>``."""
    if reason not in REASONS or state not in KEPT:
        raise ValueError(f"not an unclear-line stage: {reason!r} {state!r}")
    return f"unclear@{started}@{reason}@{state}@{stamp(since)}"


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
    start = stage_time(started, "the unclear-line start")
    since = stage_time(since_text, "the unclear-line stage time")
    if since < start - MAX_SKEW:
        raise ValueError("IVR_STAGE: the unclear-line stage began before the script did")
    seconds_ago(start, now, "the unclear-line start")
    return started, reason, state, seconds_ago(since, now, "the unclear-line stage time")


def prompt_of(stage: str, reason: str) -> str:
    """The prompt id of a stage: unclear_ask (ask and ask-again), unclear_goodbye_<reason>."""
    return f"unclear_goodbye_{reason}" if stage == "goodbye" else "unclear_ask"


class UnclearLine(PausedScript[UnclearAction]):
    """The unclear-line script of one caller.

    ``state``: idle, then ask, pause1, ask-again, pause2, goodbye, pause3 while it runs;
    released, returned, hungup (terminal).
    """

    # (prompt playing, pause after it, next stage or None for the release)
    SCRIPT = (
        ("ask", "pause1", "ask-again"),
        ("ask-again", "pause2", "goodbye"),
        ("goodbye", "pause3", None),
    )
    TERMINAL = frozenset({"released", "returned", "hungup"})

    def __init__(self, reason: str, pause: float = 5.0) -> None:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, not {reason!r}")
        super().__init__(pause, "idle")
        self.reason = reason

    @classmethod
    def resumed(cls, reason: str, pause: float, state: str, age: float, now: float) -> UnclearLine:
        """The script another controller ran up to ``state`` (one of :data:`KEPT`), begun
        ``age`` s ago (this clock's ``now``): a pause ends when it would have (at once if
        that is past), never sooner; ``ask`` is played again by :meth:`start`."""
        line = cls(reason, pause)
        if state in ("pause1", "pause2", "pause3"):
            line.state, line.pause_started = state, now - max(age, 0.0)
        return line

    def _next(self, step: str) -> UnclearAction:
        self.state = step
        return Say(prompt_of(step, self.reason), step)

    def _release(self) -> UnclearAction:
        return Release()

    def start(self, now: float) -> list[UnclearAction]:
        """The caller has left the agent: ask them to speak up."""
        return [self._next("ask")] if self.state == "idle" else []

    def clear_speech(self, now: float) -> list[UnclearAction]:
        """The caller spoke clearly: back to the agent, whatever the stage."""
        return self._return("speech")

    def agent_takes_back(self, now: float) -> list[UnclearAction]:
        """The agent takes the caller back (their key again, or the API), whatever the stage."""
        return self._return("agent")

    def _return(self, by: str) -> list[UnclearAction]:
        during = self._leave("returned")
        return [] if during is None else [ReturnToAgent(during, by)]
