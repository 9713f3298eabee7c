"""Two things every route that listens to a caller needs over its FastAGI session.

:func:`talk_detect`: arm Asterisk's ``TALK_DETECT`` on the channel (AMI
``ChannelTalkingStart``/``Stop`` follow) and take it off again after a normal exit, so
the agent's leg does not carry the detector and its events along. Not while a hang-up or
a cancellation unwinds, and not when the controller dies: the detector then stays armed
and the next node of a pair still has the caller's talk (:mod:`ivr.ami.talk`).

:class:`SwitchClock`: the switch's own wall clock, read once per session (``GET VARIABLE
STRFTIME(,,%s.%3q)``): the times a route keeps on the channel (``IVR_STAGE``) are the
switch's, like the ``Timestamp`` of its AMI events, so the node that takes a script over
compares them with no node's clock involved. The reading is an interval, not a point: the
switch read its clock somewhere in the round trip of the command, and printed it cut to
the millisecond. A time written for a later wait takes the interval's end
(:meth:`SwitchClock.latest`), a reader's "how long ago" its start
(:meth:`SwitchClock.earliest`): a pause that spans a takeover is never shortened by
either node's reading, whichever way each errs.
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
# %3q is the microseconds divided down, not rounded (main/stdtime/localtime.c,
# ast_strftime_locale): the switch's clock read at most this much past the printed value.
SWITCH_RESOLUTION = 0.001
SLOW_SYNC = 1.0  # s: a round trip longer than this is logged (its wide bounds are still kept)


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
    """The switch's unix time, from this node's steady ``clock`` (monotonic: a step of the
    node's wall clock after the reading changes nothing) and the bounds of the offset
    measured by :meth:`sync`; none until then, or if the switch's answer does not hold up:
    the three readings are then this node's ``wall`` clock as it was at the start.

    * :meth:`latest`: the switch's clock reads at most this now. For a time written down as
      "this happened at" that a node will later wait from (a stage's start, the end of a
      prompt that starts a pause): a reader then counts the wait from no earlier than the
      truth.
    * :meth:`earliest`: the switch's clock reads at least this now. For "how long ago" of a
      written time, hence "how much is left" of a wait: never over-estimated, so the rest
      is never under-estimated.
    * :meth:`now`: the midpoint, for records (a time to show or to name something by, not
      to wait by)."""

    def __init__(self, wall: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.low = self.high = wall() - clock()  # bounds of (switch clock - this steady clock), s
        self.round_trip = 0.0
        self.synced = False

    async def sync(self, call: AgiChannel) -> SwitchClock:
        """One ``GET VARIABLE`` of :data:`SWITCH_NOW`. The switch read its clock at a
        moment in [before, after] (this node's steady clock), and its clock then read between the
        printed value and :data:`SWITCH_RESOLUTION` past it: the offset lies in
        [at - after, at + resolution - before]. A round trip over :data:`SLOW_SYNC` is
        logged and its bounds kept: pauses lengthen by up to it, never shorten."""
        before = self.clock()
        text = await call.get_variable(SWITCH_NOW) or ""
        after = self.clock()
        try:
            at = float(text) if len(text) <= 20 and text.replace(".", "", 1).isdigit() else math.nan
        except ValueError:
            at = math.nan
        if math.isfinite(at) and at > 0:
            self.low, self.high = at - after, at + SWITCH_RESOLUTION - before
            self.round_trip, self.synced = after - before, True
            if self.round_trip > SLOW_SYNC:
                log.warning("agi.switch_clock_slow", round_trip=round(self.round_trip, 3),
                            note="the switch's time is known to within the round trip: scripted pauses "
                                 "across a takeover may last up to that much longer, never shorter")
        elif text:
            log.warning("agi.switch_clock_refused", value=text[:40])
        return self

    def latest(self) -> float:
        """The latest the switch's clock can read now: for a time written for a later wait."""
        return self.clock() + self.high

    def earliest(self) -> float:
        """The earliest the switch's clock can read now: for how long ago a written time was."""
        return self.clock() + self.low

    def now(self) -> float:
        """The midpoint of :meth:`earliest` and :meth:`latest`: for records, not for waits."""
        return self.clock() + (self.low + self.high) / 2
