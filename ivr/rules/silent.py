"""R3 Silent call: three prompts, each followed by a pause, then release.

The script, from the moment the call is answered with the greeting already playing::

    greeting ─finished→ pause1 (5 s) → prompt2 ─finished→ pause2 (5 s)
             → prompt3 (apology) ─finished→ pause3 (5 s) → released

A pause starts only when the prompt has *finished* playing, so prompt lengths count and a
late timer can only delay, never shorten, the script: release is impossible before three
prompts finished and three full pauses elapsed. Speech or a DTMF digit at any moment leaves
the script (:class:`RouteToAgent`); a caller hang-up ends it with no further action. The
walk from prompt to pause is the unclear line's too (:class:`ivr.rules.script.PausedScript`).

The flow reports what it observed when a prompt or a pause ends (:meth:`SilentCall.after_prompt`,
:meth:`SilentCall.after_pause`: a key, speech heard, whether it could hear the caller at
all) and executes the one action returned; all routing is decided here. A key wins over
speech, speech over silence; a caller the controller cannot hear (``reliable`` False) is
never released as silent but handed to the agents ("deaf").
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.rules.script import PausedScript
from ivr.rules.stage import seconds_ago, stage_time, stamp


@dataclass(frozen=True)
class Play:
    """Play prompt ``prompt`` to the caller (``stage``: prompt2 | prompt3)."""

    prompt: str
    stage: str


@dataclass(frozen=True)
class Release:
    """Hang up: the caller stayed silent through the whole script."""


@dataclass(frozen=True)
class RouteToAgent:
    """The caller responded (``reason``: "speech" | "dtmf"), or cannot be heard ("deaf"):
    stop the script, carry on to the agents."""

    reason: str
    stage: str


SilentAction = Play | Release | RouteToAgent

# The stage a call reached, kept on its channel (IVR_STAGE) so that another controller can
# resume the script when this one dies mid-call: "start" (the greeting is playing) or the
# last prompt that finished, with the time its pause began (the switch's clock, at the latest:
# :meth:`ivr.agi.talk.SwitchClock.latest`).
STAGES = ("start", "greeting", "prompt2", "prompt3")
_PROMPTS = {"prompt2": "silent_prompt2", "prompt3": "silent_prompt3"}  # what each stage plays


def stage_value(stage: str, at: float) -> str:
    """What the flow writes to IVR_STAGE: ``stage@<unix time>``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return f"{stage}@{stamp(at)}"


def parse_stage(text: str, now: float) -> tuple[str, float]:
    """Read IVR_STAGE back (it is a channel variable: hostile). Returns (stage, seconds
    since its pause began, never negative); raises ValueError naming what is wrong."""
    stage, sep, at_text = text.partition("@")
    if not sep or stage not in STAGES:
        raise ValueError(f"IVR_STAGE: stage must be one of {', '.join(STAGES)}, got {text[:40]!r}")
    return stage, seconds_ago(stage_time(at_text, "time"), now, "time")


class SilentCall(PausedScript[SilentAction]):
    """The silent-call script of one answered call.

    ``state`` is one of: greeting, pause1, prompt2, pause2, prompt3, pause3 (while the
    script runs) and released, routed, hungup (terminal). The greeting is assumed to be
    playing when the machine is created (the I/O layer plays it on answer).
    """

    # (stage playing, pause after it, the next stage or None for release)
    SCRIPT = (
        ("greeting", "pause1", "prompt2"),
        ("prompt2", "pause2", "prompt3"),
        ("prompt3", "pause3", None),
    )
    TERMINAL = frozenset({"released", "routed", "hungup"})

    def __init__(self, pause: float = 5.0) -> None:
        super().__init__(pause, "greeting")

    @classmethod
    def resumed(cls, pause: float, stage: str, pause_started: float) -> SilentCall:
        """The script of a call another controller ran up to ``stage`` (:data:`STAGES`):
        after a finished prompt, in its pause since ``pause_started`` (this clock), so the
        pause ends when it would have; "start": from the greeting again."""
        script = cls(pause)
        for i, (playing, pause_name, _) in enumerate(cls.SCRIPT):
            if playing == stage:
                script.state, script.pause_started = pause_name, pause_started
                script.prompts_finished, script.pauses_elapsed = i + 1, i
        return script

    def _next(self, step: str) -> SilentAction:
        self.state = step
        return Play(_PROMPTS[step], step)

    def _release(self) -> SilentAction:
        return Release()

    def after_prompt(self, now: float, stage: str, *, digit: str | None = None, heard: bool = False,
                     reliable: bool = True) -> list[SilentAction]:
        """The prompt of ``stage`` ended (in full, or cut by ``digit``). ``heard``: speech
        was heard while it played; ``reliable``: the controller could hear the caller.
        ``[]`` means a pause began (wait for :attr:`next_deadline`)."""
        if digit:
            return self.dtmf(now, digit)
        if heard:
            return self.speech(now)
        if not reliable:
            return self._respond("deaf")  # silence cannot be told from speech
        return self.prompt_finished(now, stage)

    def after_pause(self, now: float, *, digit: str | None = None, heard: bool = False,
                    reliable: bool = True) -> list[SilentAction]:
        """A wait in the current pause ended: by ``digit``, by speech (``heard``), or on
        the clock. ``[]`` means the pause is not over yet (wait again)."""
        if digit:
            return self.dtmf(now, digit)
        if heard:
            return self.speech(now)
        deadline = self.next_deadline
        if not reliable and self.state == self.SCRIPT[-1][1] and deadline is not None and now >= deadline:
            return self._respond("deaf")  # hearing failed during the script: speech may be missed
        return self.on_timer(now)

    def _respond(self, reason: str) -> list[SilentAction]:
        stage = self._leave("routed")
        return [] if stage is None else [RouteToAgent(reason, stage)]

    def speech(self, now: float) -> list[SilentAction]:
        """Speech energy from the caller: leave the script."""
        return self._respond("speech")

    def dtmf(self, now: float, digit: str = "") -> list[SilentAction]:
        """A DTMF digit from the caller: leave the script."""
        return self._respond("dtmf")
