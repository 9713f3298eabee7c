"""Waking a FastAGI session that waits in one long command, from the controller.

A flow that must react to something only the controller sees (a timer of the
:class:`~ivr.timers.TimerService`, speech heard through AMI ``ChannelTalkingStart``)
waits in one long ``WAIT FOR DIGIT`` (or a prompt whose escape digits include
:data:`WAKE_DIGIT`) instead of polling in short slices, and the controller ends that
command by making Asterisk "receive" the digit ``D`` on the channel: AMI ``PlayDTMF``
with ``Receive: true``. ``D`` is a digit phones do not send, so it is never a caller's
choice. Measured on the embedded switch: the woken command ends within about a
millisecond of the action.

Trap: between two AGI commands res_agi reads and *discards* the channel's frames, so a
wake that arrives just before the waiting command starts is lost. :func:`wake_until`
therefore repeats the wake every :data:`RETRY` s until the waiter says it woke.

panoramisk trap: it takes any reply ending in "successfully queued" for an Originate's
and fails on an action without an ``Async`` header, hence ``Async: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import structlog

from ivr.ami.connection import AmiError
from ivr.ami.link import AmiLink

log = structlog.get_logger("ivr.wake")

WAKE_DIGIT = "D"
RETRY = 0.25  # s between wakes while the session has not woken (a wake can be lost, above)
ACTION_TIMEOUT = 5.0

# A scripted pause (silent call, unclear line) is waited this much past its deadline. The
# rule says "never sooner", and the switch's record of a pause is its event Timestamps:
# CLOCK_REALTIME (which NTP may slew against this process's monotonic clock), and an
# AGIExecEnd stamped only after res_agi wrote the reply that starts the pause here. Under
# load that record read a pause waited 5.000 s here as 4.998 s; 50 ms is not heard.
# It no longer has to cover the nodes' readings of the switch's clock when a pause spans a
# takeover: those are bounds, the writer's stage time the latest and the reader's "now" the
# earliest the switch's clock can be (ivr.agi.talk.SwitchClock), so they can only lengthen
# the pause. Still its job across a takeover: either node's steady clock, which carries the
# reading to its use, drifting from the switch's meanwhile (NTP slews it at most 0.5 ms a
# second, and a script lasts under a minute; a step of a node's wall clock does not reach it).
PAUSE_GUARD = 0.05


def pause_left_ms(deadline: float, now: float) -> int:
    """Milliseconds of ``WAIT FOR DIGIT`` left until ``deadline`` (+ :data:`PAUSE_GUARD`);
    0 or less: the pause is over."""
    return math.ceil(round((deadline + PAUSE_GUARD - now) * 1000, 6))  # 5.05 s is 5050 ms, not 5051


async def wake(conn: AmiLink, channel: str) -> bool:
    """Make Asterisk receive :data:`WAKE_DIGIT` on ``channel``; False if AMI failed."""
    try:
        await conn.action({"Action": "PlayDTMF", "Channel": channel, "Digit": WAKE_DIGIT,
                           "Duration": "40", "Receive": "true", "Async": "false"}, ACTION_TIMEOUT)
    except AmiError as exc:  # no connection, or the channel is gone: the wait ends on its own
        log.debug("wake.failed", channel=channel, error=str(exc))
        return False
    return True


async def wake_until(conn: AmiLink, channel: str, woken: asyncio.Event,
                     retry: float = RETRY) -> int:
    """Wake ``channel`` until ``woken`` is set (by the session, when its command returned);
    returns how many wakes were sent. Bounded by the caller: set ``woken`` (or cancel)
    when the session's wait is over in any way."""
    sent = 0
    while not woken.is_set():
        await wake(conn, channel)
        sent += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(retry):
                await woken.wait()
    return sent
