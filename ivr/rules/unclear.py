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
