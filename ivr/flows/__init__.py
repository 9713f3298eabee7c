"""Call flows: translate AGI/AMI I/O to and from the pure rules in :mod:`ivr.rules`.
:func:`build_inbound` plugs the inbound flow (R2 greeting, R3 silent-call script, callers
heard by TALK_DETECT on AMI) into the app."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ivr.feature import Feature, Runtime
from ivr.flows.inbound import InboundFlow
from ivr.flows.speech import SpeechSettings, TalkDetector
from ivr.sections import Config

__all__ = ["InboundFlow", "build_inbound"]


def build_inbound(rt: Runtime, config: Config, now: Callable[[], datetime]) -> Feature[InboundFlow]:
    """The ``inbound`` FastAGI route; ``now`` is the wall clock the greeting is chosen by."""
    speech = TalkDetector(rt.ami, SpeechSettings.from_config(config.silence))
    flow = InboundFlow(config, now, speech=speech, bus=rt.bus, once=rt.once)
    return Feature("inbound", flow, agi_routes={"inbound": flow})
