"""What the two R3 scripts share: prompts, each followed by a pause, then the release.

The silent call (:class:`ivr.rules.silent.SilentCall`) and the unclear line
(:class:`ivr.rules.unclear.UnclearLine`) walk a script of (prompt playing, pause after
it, what follows or None for the release). A pause starts only when its prompt has
*finished* playing, so a late timer can only delay the script, never shorten it: the
release is never sooner than the last pause after the last prompt ended.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

A = TypeVar("A")  # the machine's action type
Script = tuple[tuple[str, str, str | None], ...]


class PausedScript(ABC, Generic[A]):
    """The state, the pause clock and the walk of one script. A subclass sets
    :attr:`SCRIPT` and :attr:`TERMINAL` and says what is played next (:meth:`_next`) and
    how the caller is released (:meth:`_release`)."""

    SCRIPT: ClassVar[Script]
    TERMINAL: ClassVar[frozenset[str]]

    def __init__(self, pause: float, state: str) -> None:
        if pause <= 0:
            raise ValueError("pause must be positive")
        self.pause = pause
        self.state = state
        self.pause_started: float | None = None
        self.prompts_finished = 0
        self.pauses_elapsed = 0
        self.prompt_ended: dict[str, float] = {}  # stage -> when its prompt finished

    @abstractmethod
    def _next(self, step: str) -> A:
        """The pause is over: set the state of ``step`` and say what to play."""

    @abstractmethod
    def _release(self) -> A:
        """The last pause is over: how the caller is released."""

    @property
    def done(self) -> bool:
        return self.state in self.TERMINAL

    @property
    def next_deadline(self) -> float | None:
        if self.state.startswith("pause") and self.pause_started is not None:
            return self.pause_started + self.pause
        return None

    def prompt_finished(self, now: float, stage: str | None = None) -> list[A]:
        """The prompt of ``stage`` (default: the current one) has played to its end."""
        for playing, pause, _ in self.SCRIPT:
            if self.state == playing and stage in (None, playing):
                self.state, self.pause_started = pause, now
                self.prompts_finished += 1
                self.prompt_ended[playing] = now
                return []
        return []  # stale or duplicate event

    def on_timer(self, now: float) -> list[A]:
        deadline = self.next_deadline
        if deadline is None or now < deadline:
            return []
        for _, pause, following in self.SCRIPT:
            if self.state == pause:
                self.pauses_elapsed += 1
                self.pause_started = None
                if following is None:
                    self.state = "released"
                    return [self._release()]
                return [self._next(following)]
        return []

    def _leave(self, state: str) -> str | None:
        """End the script in ``state`` (a terminal one); the state it was in, or None if it had ended."""
        if self.done:
            return None
        during, self.state = self.state, state
        return during

    def hangup(self, now: float) -> list[A]:
        """The caller hung up: the script ends, nothing more to do."""
        self._leave("hungup")
        return []
