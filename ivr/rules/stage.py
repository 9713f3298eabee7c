"""Reading back the times a rule machine keeps on the caller's channel (``IVR_STAGE``), so
that another controller can go on with a script when this one dies: the silent call
(:mod:`ivr.rules.silent`), the unclear line (:mod:`ivr.rules.unclear`) and hold
(:mod:`ivr.rules.hold`). A channel variable is hostile: each check raises ValueError
naming what is wrong."""

from __future__ import annotations

import math

MAX_AGE = 3600.0  # s: an older time is not this call's script any more
MAX_SKEW = 5.0  # s a time may lie in the future (another node's clock)


def stamp(at: float) -> str:
    """``at`` (seconds since 1970) as written in IVR_STAGE: milliseconds, rounded *up*: a
    time written is when something happened at the latest (a pause's start, that a reader
    waits from), and the text must not make it earlier."""
    return f"{math.ceil(round(at * 1000, 3)) / 1000:.3f}"  # round first: 0.123 * 1000 is 123.00000000000001


def stage_time(text: str, what: str) -> float:
    """``text`` as seconds since 1970: digits with at most one dot, at most 20 characters."""
    if not text or len(text) > 20 or text.count(".") > 1 or not text.replace(".", "").isdigit():
        raise ValueError(f"IVR_STAGE: {what} must be seconds since 1970, got {text[:40]!r}")
    return float(text)


def seconds_ago(at: float, now: float, what: str, max_age: float = MAX_AGE) -> float:
    """How long before ``now`` the time ``at`` was (never negative); at most
    :data:`MAX_SKEW` s in the future and ``max_age`` s in the past."""
    ago = now - at
    if not -MAX_SKEW <= ago <= max_age:
        raise ValueError(f"IVR_STAGE: {what} is {ago:.0f} s from now, not this call's (at most {max_age:.0f} s ago)")
    return max(ago, 0.0)
