"""FastAGI route ``agent-answered``: what the caller hears once an agent has answered.

Why this way (tried on the embedded Asterisk 22): Dial's ``A(x:y)`` plays ``y`` to the
caller at answer, but its file list is fixed when Dial() starts, so it cannot depend on
how long the agent then took; ``U()`` runs on the *agent's* channel, and no AMI action
plays a file to a caller who is still inside Dial(). Dial's ``G(ivr-agents^answered^1)``
does work: on answer the caller continues at ``answered,1`` and the agent at
``answered,2`` (waiting), the caller runs this route, then ``Bridge(${DIALEDPEERNAME})``
joins the two (the agent channel keeps its name and Uniqueid). The decision is the
controller's, made from the same ring count as the alarms (including rings of agents
tried before a re-route), and the apology and agent number are played in full before the
conversation. Without the controller the dialplan still plays the agent number.

Queue() has no ``G()``; its member-side hooks (``announce``, the gosub argument) play to
the agent. Its AGI argument, though, runs on the *caller's* channel after a member
answered and before the bridge (the member waits): ivr-agents.conf passes this route
there. Queue sets no DIALEDPEERNAME; with ``setinterfacevar = yes`` it sets
MEMBERINTERFACE, and the monitor's leg on that device names the agent (IVR_AGENT_NUMBER
is then just "queue").
"""

from __future__ import annotations

import structlog

from ivr.agi.channel import AgiChannel
from ivr.catalog import agent_number_prompts
from ivr.rings.monitor import RingMonitor
from ivr.sections import PromptsConfig, SwitchConfig

log = structlog.get_logger("ivr.rings.answer")


class AgentAnsweredFlow:
    def __init__(self, monitor: RingMonitor, switch: SwitchConfig, prompts: PromptsConfig) -> None:
        self.monitor = monitor
        self.switch, self.prompts = switch, prompts

    def sound(self, prompt_id: str, language: str) -> str:
        return f"{self.prompts.sound_prefix}/{language}/{prompt_id}"

    async def __call__(self, call: AgiChannel) -> None:
        linkedid = await call.get_variable("CHANNEL(linkedid)") or call.uniqueid
        peer = await call.get_variable("DIALEDPEERNAME") or ""
        member = "" if peer else await call.get_variable("MEMBERINTERFACE") or ""
        number = await call.get_variable("IVR_AGENT_NUMBER") or ""
        language = (await call.get_variable("IVR_LANGUAGE")) or self.switch.language
        decision = self.monitor.answer_decision(linkedid, peer, member)
        if not _digits(number) and _digits(decision.agent):
            number = decision.agent  # a queue member: its number from [[agents]]
        prompts = (["ring_apology"] if decision.late else []) + (
            agent_number_prompts(number) if _digits(number) else [])
        log.info("ring.answer_prompts", uniqueid=call.uniqueid, linkedid=linkedid, agent=number or decision.agent,
                 rings=decision.rings, late=decision.late, prompts=prompts)
        for prompt in prompts:
            await call.stream_file(self.sound(prompt, language))
        await call.set_variable("IVR_RESULT", "played")


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and '١', which have no prompt."""  # noqa: RUF002 - the point
    return text.isascii() and text.isdigit()
