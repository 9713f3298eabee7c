"""What one unclear-line script is made of: its errors, :class:`UnclearSettings` (from the
typed ``[unclear]`` section; its defaults are the section's), one :class:`UnclearSession`
per caller, and the switch names asterisk/ivr-unclear.conf shares.

**What "clear" means on the audio**, measured on the embedded switch (Asterisk 22.10,
Local-channel callers playing test audio into the caller's channel, ``TALK_DETECT`` events
over AMI; see the README, "Unclear line", for the table): ``TALK_DETECT(set)=300,512``
on the caller's channel; a *talk burst* is ``ChannelTalkingStart`` .. ``ChannelTalkingStop``
(its ``Duration``). Clear speech is a burst of at least ``clear_min_ms`` (500 ms) that
*ends* within ``clear_max_ms`` (10 s):

* normal speech (-20 dBFS RMS, 2.2 s of words): one burst of 2160 ms: clear;
* faint speech (-40 dBFS RMS, a caller far from the microphone): bursts of 0 and 41 ms:
  not clear (at threshold 256 it gave 539 and 1000 ms, which would pass: hence 512);
* a noisy line (pink noise at -20 dBFS RMS, 20 s): one burst lasting as long as the
  noise (19979 ms): not clear; the -45 dBFS line noise of the silent-call tests raises
  no burst at 512 (at 256: ten bursts of 0-300 ms and three that never ended).

Measured in the scenarios: each pause 5.001-5.005 s (ask end to ask-again, ask-again end
to goodbye, goodbye end to release), a clear speaker back with the agent 0.3 s after
their words ended. Limit: a burst ends only on received audio; a phone that suppresses
silence between words may never end one, and is then not returned by speech (the
agent's key again brings them back).

**Across a node death** (issue 17): the route keeps the stage on the caller (``IVR_STAGE``);
``[ivr-agi]`` runs ``unclear`` again on the next node, which rebuilds the session (the stage
validated, ``IVR_UNCLEAR_AGENT``, the keeper: :func:`~ivr.ami.away.parties_left`, as hold)
and goes on: a pause ends when it would have; each stage announced once (:mod:`ivr.once`).
The stage's times are the switch's clock (:class:`~ivr.agi.talk.SwitchClock`), and a clear
burst that ended after the stage was written (the caller answered while no node listened:
the detector stays armed, every node keeps the talk, :class:`~ivr.ami.talk.TalkLog`) returns
the caller to the agent at once, with no further prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ivr import errors
from ivr.ami.away import AwaySession, AwaySettings
from ivr.errors import IvrError
from ivr.rules.unclear import REASONS, UnclearLine
from ivr.sections import AgentConfig, PromptsConfig, SwitchConfig, UnclearConfig

CONTEXT = "ivr-unclear"
AGENT_VARIABLE = "IVR_UNCLEAR_AGENT"
KEY_EVENT = "IvrUnclearKey"  # features.conf ivrfaint / ivrnoisy
USER_EVENT = "IvrUnclearLine"
KEEPER_TIMEOUT = 5.0


class UnclearError(IvrError):
    error_id = "unclear-failed"
    status = 409


class NoSuchCall(errors.NoSuchCall, UnclearError):
    """The one API-wide ``no-such-call``, also an unclear-line error."""


class NotAside(UnclearError):
    error_id = "not-in-unclear-script"
    status = 409


class BadReason(UnclearError):
    error_id = "bad-reason"
    status = 400


_U = UnclearConfig()  # the defaults


@dataclass(frozen=True, kw_only=True)
class UnclearSettings(AwaySettings):
    """``[unclear]``; the language, prompt prefix and agents are :class:`AwaySettings`'."""

    pause: float = _U.pause
    clear_threshold: int = _U.clear_threshold
    clear_min_ms: int = _U.clear_min_ms
    clear_max_ms: int = _U.clear_max_ms
    talk_silence_ms: int = _U.talk_silence_ms

    def __post_init__(self) -> None:
        UnclearLine(REASONS[0], self.pause)  # a bad pause fails at start-up
        if not 1 <= self.clear_threshold <= 32767:
            raise ValueError(f"unclear.clear_threshold must be 1..32767, got {self.clear_threshold}")
        if not 0 < self.clear_min_ms < self.clear_max_ms:
            raise ValueError("unclear: need 0 < clear_min_ms < clear_max_ms")

    @classmethod
    def from_config(cls, unclear: UnclearConfig, switch: SwitchConfig, prompts: PromptsConfig,
                    agents: Sequence[AgentConfig]) -> UnclearSettings:
        return cls(pause=unclear.pause, clear_threshold=unclear.clear_threshold,
                   clear_min_ms=unclear.clear_min_ms, clear_max_ms=unclear.clear_max_ms,
                   talk_silence_ms=unclear.talk_silence_ms, **cls.shared(switch, prompts, agents))

    def is_clear(self, duration_ms: int) -> bool:
        """A talk burst of ``duration_ms`` (it reached the threshold and then ended) is
        clear speech: long enough to be words, short enough not to be steady noise."""
        return self.clear_min_ms <= duration_ms <= self.clear_max_ms


@dataclass(kw_only=True)
class UnclearSession(AwaySession):
    """One caller taken out of the agent's bridge for the unclear-line script (``via``:
    key, api, takeover; ``ended``: returned, released, hungup, failed, agent_left)."""

    reason: str
    script: UnclearLine
    listening: bool = False
    clear: asyncio.Event = field(default_factory=asyncio.Event)  # clear speech, or the agent
    agent_back: bool = False  # the agent took the caller back (key again, API)
    started: str = ""  # when the caller's route began, unix time as written in IVR_STAGE
    bursts: list[dict[str, Any]] = field(default_factory=list)  # talk bursts heard (figures)
