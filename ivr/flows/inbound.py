"""The inbound flow (context ``ivr-inbound``): answer, greet, and let go of the call.

This is the first vertical slice: the greeting is chosen by the calendar and played;
the silent-call script and agent hand-off build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from ivr.agi.channel import AgiChannel

if TYPE_CHECKING:
    from ivr.config import Config

log = structlog.get_logger("ivr.inbound")


class InboundFlow:
    def __init__(self, config: Config, now: Callable[[], datetime]) -> None:
        self.config = config
        self.now = now

    def sound(self, prompt_id: str, language: str | None = None) -> str:
        lang = language or self.config.switch.language
        return f"{self.config.prompts.sound_prefix}/{lang}/{prompt_id}"

    async def __call__(self, call: AgiChannel) -> None:
        from ivr.greeting import choose_greeting

        with structlog.contextvars.bound_contextvars(uniqueid=call.uniqueid, caller=call.caller):
            await call.answer()
            greeting = choose_greeting(self.now(), self.config)
            log.info("inbound.greeting", holiday=greeting.holiday, daypart=greeting.daypart,
                     prompts=greeting.prompts)
            await call.set_variable("IVR_GREETING", ",".join(greeting.prompts))
            for prompt in greeting.prompts:
                await call.stream_file(self.sound(prompt, greeting.language))
            await call.set_variable("IVR_RESULT", "done")
