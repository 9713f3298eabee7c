"""Two things every route that listens to a caller needs over its FastAGI session.

:func:`talk_detect`: arm Asterisk's ``TALK_DETECT`` on the channel (AMI
``ChannelTalkingStart``/``Stop`` follow) and take it off again after a normal exit, so
the agent's leg does not carry the detector and its events along. Not while a hang-up or
a cancellation unwinds, and not when the controller dies: the detector then stays armed
and the next node of a pair still has the caller's talk (:mod:`ivr.ami.talk`).

:class:`SwitchClock`: the switch's own wall clock, read once per session (``GET VARIABLE
STRFTIME(,,%s.%3q)``, milliseconds, half a round trip of error): the times a route keeps
on the channel (``IVR_STAGE``) are the switch's, like the ``Timestamp`` of its AMI events,
so the node that takes a script over compares them with no node's clock involved.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from ivr.agi.channel import AgiChannel, AgiError, AgiHangup

log = structlog.get_logger("ivr.agi.talk")

SWITCH_NOW = "STRFTIME(,,%s.%3q)"  # the switch's unix time, ms (checked on Asterisk 22.10)


@asynccontextmanager
async def talk_detect(call: AgiChannel, silence_ms: int, threshold: int) -> AsyncIterator[None]:
    """``TALK_DETECT(set)=<silence_ms>,<threshold>`` on ``call`` while inside."""
    await call.set_variable("TALK_DETECT(set)", f"{silence_ms},{threshold}")
    yield
    try:
        await call.set_variable("TALK_DETECT(remove)", "")
    except (AgiHangup, AgiError):
        pass


class SwitchClock:
    """``now()``: the switch's unix time, from this node's ``wall`` clock and the offset
    measured by :meth:`sync` (0 until then, or if the switch's answer does not hold up)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self.offset = 0.0
        self.synced = False

    async def sync(self, call: AgiChannel) -> SwitchClock:
        before = self.wall()
        text = await call.get_variable(SWITCH_NOW) or ""
        after = self.wall()
        try:
            at = float(text) if len(text) <= 20 and text.replace(".", "", 1).isdigit() else math.nan
        except ValueError:
            at = math.nan
        if math.isfinite(at) and at > 0:
            self.offset, self.synced = at - (before + after) / 2, True
        elif text:
            log.warning("agi.switch_clock_refused", value=text[:40])
        return self

    def now(self) -> float:
        return self.wall() + self.offset
