"""Hearing a called-back customer answer (issue 18): a key, or speech the way a person
answers, never the way an answering machine does.

The customer's FastAGI route arms ``TALK_DETECT(set)=<live_word_gap_ms>,<live_threshold>``
on the customer's channel as soon as it starts (the same detector and level, 512, as the
silent-call rule: the -45 dBFS line noise of the tests raises no burst at 512, it did at
256). Asterisk then raises AMI ``ChannelTalkingStart`` at the first loud 20 ms frame and
``ChannelTalkingStop`` (its ``Duration``: the speech, without the closing quiet) once
``live_word_gap_ms`` of quiet followed, whatever the channel is doing (our greeting
playing, or a wait). The pure :class:`~ivr.rules.callback.LiveAnswer` turns the bursts
into a verdict: a short greeting then a pause is a person, long speech a machine.

Times are the controller's clock when each event arrives (not Asterisk's ``Timestamp``:
the switch may run on another host); AMI delivers within milliseconds.

Limit: a burst ends only on received audio; a phone that suppresses silence (no RTP
between words) never ends one, and its "hello" grows into a machine's long speech. A key
still counts, and so does a person whose phone sends its quiet (PSTN trunks do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog

from ivr.agi.channel import AgiChannel
from ivr.agi.talk import talk_detect
from ivr.ami.link import AmiLink
from ivr.rules.callback import LiveAnswer, LiveRule

log = structlog.get_logger("ivr.callbacks")

_SLACK = 0.01  # s past a deadline before asking the rule again (it decides strictly after)


class LiveWatch:
    """One customer's channel while the route listens: the rule, and an event set at every
    burst so a waiter looks again."""

    def __init__(self, uniqueid: str, rule: LiveRule, clock: Callable[[], float]) -> None:
        self.uniqueid = uniqueid
        self.answer = LiveAnswer(rule)
        self.clock = clock
        self.changed = asyncio.Event()

    def verdict(self) -> str | None:
        return self.answer.decide(self.clock())

    async def wait(self, seconds: float | None = None) -> str | None:
        """The verdict as soon as there is one; None after ``seconds`` (None: no limit)."""
        end = None if seconds is None else self.clock() + seconds
        while (verdict := self.verdict()) is None:
            now = self.clock()
            if end is not None and now >= end:
                return None
            deadline = self.answer.deadline()
            limits = [t - now for t in (end, None if deadline is None else deadline + _SLACK) if t is not None]
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(min(limits), 0.0) if limits else None)
            except TimeoutError:
                pass
        return verdict


class LiveListener:
    """TALK_DETECT bursts on the customers' channels, for :class:`LiveWatch` es."""

    def __init__(self, rule: LiveRule, threshold: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule, self.threshold, self.clock = rule, threshold, clock
        self.watches: dict[str, LiveWatch] = {}

    def attach(self, ami: AmiLink) -> None:
        ami.subscribe("ChannelTalkingStart", self.handle_event)
        ami.subscribe("ChannelTalkingStop", self.handle_event)

    def handle_event(self, event: Any) -> None:
        watch = self.watches.get(str(event.get("Uniqueid", "")))
        if watch is None:
            return
        now = self.clock()
        if event.get("Event") == "ChannelTalkingStart":
            watch.answer.talk_start(now)
        else:
            try:
                duration = int(event.get("Duration", ""))
            except ValueError:
                return
            watch.answer.talk_stop(now, duration)
            log.info("callbacks.customer_speech", uniqueid=watch.uniqueid, duration_ms=duration,
                     verdict=watch.answer.verdict)
        watch.changed.set()

    @asynccontextmanager
    async def listen(self, call: AgiChannel) -> AsyncIterator[LiveWatch]:
        watch = LiveWatch(call.uniqueid, self.rule, self.clock)
        self.watches[call.uniqueid] = watch
        try:  # disarmed after a normal exit only: the bridged call must not carry it along
            async with talk_detect(call, self.rule.word_gap_ms, self.threshold):
                yield watch
        finally:
            self.watches.pop(call.uniqueid, None)
