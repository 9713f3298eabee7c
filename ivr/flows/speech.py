"""Hearing the caller (R3): speech on the inbound channel, from Asterisk's TALK_DETECT.

The inbound flow arms ``TALK_DETECT(set)=<silence ms>,<talking threshold>`` on the
caller's channel over AGI; Asterisk's DSP then raises AMI ``ChannelTalkingStart`` on the
first 20 ms frame of the caller's audio whose mean absolute sample value reaches the
talking threshold, whatever the channel is doing (playing a prompt or waiting). The
detector subscribes to that event on the controller's AMI connection and wakes the
call's :class:`SpeechWatch`.

Chosen by measurement on the embedded switch (Asterisk 22.10, Local channels: the caller's
side plays ``ivr-test/caller_speech``, whose speech starts 1.0 s into the file; latency
is AMI ``ChannelTalkingStart`` minus (caller ``Playback`` start + 1.0 s), both Asterisk
event timestamps, 3-4 runs each):

====================================  ===============  ===============================
detector                              speech latency   ``line_noise`` (-45 dBFS pink)
====================================  ===============  ===============================
TALK_DETECT threshold 256 (default)   20-22 ms         **counted as speech** (4/4)
TALK_DETECT threshold 384             40 ms            silence (3/3)
TALK_DETECT threshold 512 (chosen)    40 ms            silence (3/3)
TALK_DETECT threshold 768             60-61 ms         silence (3/3)
WaitForNoise(200,1,8)                 200-202 ms       silence (TIMEOUT)
====================================  ===============  ===============================

The noise file's loudest 20 ms frame has a mean absolute value of 335; the speech's
frames are 600-6000. WaitForNoise is fast enough too, but its threshold is the global
``dsp.conf`` one (not per call, not in the controller's config), its timeout counts whole
seconds of wall clock (it can end up to a second early), it swallows the DTMF digits it
reads, and it hears nothing while a prompt plays. ``BackgroundDetect`` waits for the end
of the talk burst, and a recorded window needs the switch's file system.

Speech heard while the flow waits out a pause in one long ``WAIT FOR DIGIT`` must end
that wait: :meth:`TalkDetector.wake_until` makes Asterisk receive the wake digit on the
caller's channel (AMI ``PlayDTMF``, :mod:`ivr.agi.wake`, shared with hold).

Without AMI the controller cannot hear the caller: :attr:`SpeechWatch.reliable` is then
False, and the flow must never release the call as silent.

A controller pair (issue 17): every node, a standby too, keeps the callers' recent talk
(:class:`~ivr.ami.talk.TalkLog`); ``listen(call, since=t)`` counts talk that began after
``t`` (the switch's time the script's stage was written) as heard, so a caller who spoke
while no node listened (the takeover) is heard by the node that goes on with the script.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from ivr.agi import wake
from ivr.agi.channel import AgiChannel
from ivr.agi.talk import talk_detect
from ivr.ami.link import AmiLink
from ivr.ami.talk import TalkLog
from ivr.sections import SilenceConfig

log = structlog.get_logger("ivr.speech")

_DEFAULTS = SilenceConfig()  # every default lives in ivr.sections


@dataclass(frozen=True)
class SpeechSettings:
    """``[silence]`` talk_threshold: mean |sample| of a 20 ms frame (16-bit) that counts as
    talking (512 is about -35 dBFS); talk_silence_ms: the silence that ends a talk burst
    (only ChannelTalkingStop depends on it)."""

    talk_threshold: int = _DEFAULTS.talk_threshold
    talk_silence_ms: int = _DEFAULTS.talk_silence_ms

    def __post_init__(self) -> None:
        if not 1 <= self.talk_threshold <= 32767:
            raise ValueError(f"silence.talk_threshold must be 1..32767, got {self.talk_threshold}")
        if self.talk_silence_ms < 1:
            raise ValueError(f"silence.talk_silence_ms must be >= 1, got {self.talk_silence_ms}")

    @classmethod
    def from_config(cls, silence: SilenceConfig) -> SpeechSettings:
        """From the config's ``[silence]`` section; a bad value fails at start-up."""
        return cls(talk_threshold=silence.talk_threshold, talk_silence_ms=silence.talk_silence_ms)


class SpeechWatch:
    """Speech on one channel. ``heard`` is set at the first ChannelTalkingStart."""

    def __init__(self, uniqueid: str, reliable: bool = True) -> None:
        self.uniqueid = uniqueid
        self.heard = asyncio.Event()
        self.at: float | None = None  # Asterisk's timestamp of the event, if it had one
        self._reliable = reliable

    @property
    def reliable(self) -> bool:
        """False if speech may have gone unheard (no AMI, or AMI dropped since arming)."""
        return self._reliable

    def mark(self, at: float | None = None) -> None:
        if not self.heard.is_set():
            self.at = at
            self.heard.set()


class SpeechDetector(Protocol):
    def listen(self, call: AgiChannel, since: float | None = None) -> Any:
        """``async with detector.listen(call) as watch``: hear the caller while inside
        (and, with ``since``, what they said after that switch time: a takeover)."""

    async def wake_until(self, channel: str, woken: asyncio.Event) -> Any:
        """End the AGI command ``channel`` waits in (wake digit), repeating until ``woken``."""


class _AmiWatch(SpeechWatch):
    def __init__(self, uniqueid: str, ami: AmiLink) -> None:
        super().__init__(uniqueid, reliable=ami.connected)
        self._ami = ami
        self._connects = ami.connects

    @property
    def reliable(self) -> bool:
        return self._reliable and self._ami.connected and self._ami.connects == self._connects


class TalkDetector:
    """Speech detection for all calls on one AMI connection (see the module docstring)."""

    def __init__(self, ami: AmiLink, settings: SpeechSettings | None = None) -> None:
        self.ami = ami
        self.settings = settings or SpeechSettings()
        self._watches: dict[str, SpeechWatch] = {}
        ami.subscribe("ChannelTalkingStart", self._on_talking)
        self.talk = TalkLog().attach(ami)  # every caller's recent talk, on a standby too

    @property
    def watching(self) -> int:
        return len(self._watches)

    def _on_talking(self, event: Any) -> None:
        watch = self._watches.get(str(event.get("Uniqueid", "")))
        if watch is None:
            return
        try:
            at: float | None = float(event["Timestamp"])
        except (KeyError, TypeError, ValueError):
            at = None
        log.info("speech.heard", uniqueid=watch.uniqueid, at=at)
        watch.mark(at)

    @asynccontextmanager
    async def listen(self, call: AgiChannel, since: float | None = None) -> AsyncIterator[SpeechWatch]:
        watch = _AmiWatch(call.uniqueid, self.ami)
        self._watches[call.uniqueid] = watch  # first: talk from now on marks the watch
        if since is not None and (at := self.talk.started_since(call.uniqueid, since)) is not None:
            log.info("speech.heard_before", uniqueid=call.uniqueid, at=at, since=since)
            watch.mark(at)  # the caller spoke while no node listened (a takeover)
        s = self.settings
        try:
            async with talk_detect(call, s.talk_silence_ms, s.talk_threshold):
                yield watch
        finally:
            self._watches.pop(call.uniqueid, None)

    async def wake_until(self, channel: str, woken: asyncio.Event) -> int:
        return await wake.wake_until(self.ami, channel, woken)


class DeafDetector:
    """No way to hear the caller (no AMI connection): every watch is unreliable."""

    async def wake_until(self, channel: str, woken: asyncio.Event) -> int:
        await woken.wait()  # nothing is ever heard, so nothing to wake: wait to be told
        return 0

    @asynccontextmanager
    async def listen(self, call: AgiChannel, since: float | None = None) -> AsyncIterator[SpeechWatch]:
        yield SpeechWatch(call.uniqueid, reliable=False)
