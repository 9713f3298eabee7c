"""The demo's script: the six calls ``ivr demo`` places (one per rule, with the simulated
callers' and agents' dialplan variables), the configuration it runs the controller with, and
how the controller's bus events read on the printed timeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scenario:
    key: str  # also the middle of the call's Uniqueid (= its call id)
    rule: str
    number: str
    title: str
    caller: str  # extension in [ivr-demo-caller]
    variables: dict[str, str]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ring", "R1", "13800001", "the agents let it ring 7 rings", "speaker",
             {"__DEMO_RING": "32", "__DEMO_WAIT": "60"}),
    Scenario("greet", "R2", "13800002", "the greeting of the day, answered at once", "speaker",
             {"__DEMO_RING": "2", "__DEMO_WAIT": "40"}),
    Scenario("silent", "R3", "13800003", "a silent caller", "silent", {"__DEMO_WAIT": "60"}),
    Scenario("hold", "R4", "13800004", "put on hold for a minute (HTTP API)", "speaker",
             {"__DEMO_RING": "2", "__DEMO_WAIT": "150", "__DEMO_STAY": "150"}),
    Scenario("xfer-ok", "R5", "13800005", "warm transfer to agent 1003, who accepts", "speaker",
             {"__DEMO_RING": "2", "__DEMO_WAIT": "90", "__DEMO_STAY": "90"}),
    Scenario("xfer-no", "R5", "13800006", "warm transfer to agent 1004, who declines", "speaker",
             {"__DEMO_RING": "2", "__DEMO_WAIT": "90", "__DEMO_STAY": "90"}),
)
TRANSFER_TARGETS = {"xfer-ok": "1003", "xfer-no": "1004"}

DEMO_TOML = """
[switch]
company = "{company}"

[ami]
host = "127.0.0.1"
port = {ami_port}
username = "ivr"

[agi]
host = "127.0.0.1"
port = {agi_port}

[http]
host = "127.0.0.1"
port = {http_port}

[database]
url = "sqlite:///{db}"

[alarms]
log = false                     # the timeline prints each ring alarm (the UserEvent still goes out)

[hold]
# Asterisk records messages inside its root filesystem: point there.
messages_dir = "{messages}"

[[agents]]
number = "1001"
name = "Demo agent 1001"
dial = "Local/1001@ivr-demo-agents"

[[agents]]
number = "1002"
name = "Demo agent 1002"
dial = "Local/1002@ivr-demo-agents"

# Transfer targets (they answer the hunt too, but 1001 always answers first).
[[agents]]
number = "1003"
name = "Demo agent 1003 (accepts transfers)"
dial = "Local/1003@ivr-demo-agents"

[[agents]]
number = "1004"
name = "Demo agent 1004 (declines transfers)"
dial = "Local/1004@ivr-demo-agents"
"""


# ---------------------------------------------------------------------- the timeline
def clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"+{int(minutes):02d}:{rest:04.1f}"


def describe(kind: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """(rule and topic, what happened) for a controller bus event; None: not shown."""
    agent = data.get("agent") or "?"
    if kind == "call.arrived":
        return "--", "call arrives"
    if kind == "greeting.played":
        when = ", ".join(str(data[k]) for k in ("daypart", "holiday") if data.get(k))
        text = f": \"{data['text']}\"" if data.get("text") else ""
        return "R2 greet", (f"greeting of the day: {' + '.join(data.get('prompts') or [])} "
                            f"({data.get('language')}{', ' + when if when else ''}){text}")
    if kind == "silent.stage":
        stage = data.get("stage")
        if stage == "responded":
            return "R3 silent", "the caller speaks: not silent, on to the agents"
        return "R3 silent", {"prompt2": "no voice in the pause after the greeting: prompt 2",
                             "prompt3": "still no voice: prompt 3",
                             "release": "still no voice: goodbye"}.get(str(stage), f"silent: {stage}")
    if kind == "call.released":
        return "R3 silent", f"released ({data.get('reason')})"
    if kind == "ring.alarm":
        return "R1 ring", f"{data.get('level')} ring alarm: {data.get('rings')} rings unanswered (agent {agent})"
    if kind == "ring.answered":
        late = " -> apology" if data.get("late") else ""
        return "R1 ring", f"agent {agent} answers after {data.get('rings')} ring(s){late}"
    if kind == "hold.start":
        return "R4 hold", f"on hold (via {data.get('via')}), music"
    if kind == "hold.reminder":
        return "R4 hold", f"reminder {data.get('count')} ({round(float(data.get('held_seconds') or 0))} s)"
    if kind == "hold.choices":
        return "R4 hold", (f"choices 1 wait / 2 message / 3 call-back "
                           f"({round(float(data.get('held_seconds') or 0))} s)")
    if kind == "hold.choice":
        chose = {"keep": "1: waits on", "message": "2: leaves a message", "callback": "3: asks for a call-back"}
        return "R4 hold", f"the caller presses {chose.get(str(data.get('choice')), data.get('choice'))}"
    if kind == "hold.resume":
        return "R4 hold", f"resumed after {float(data.get('held_seconds') or 0):.1f} s: thank-you, agent back"
    if kind == "transfer.state":
        reason = f" ({data['reason']})" if data.get("reason") else ""
        return "R5 xfer", f"to {data.get('target')}: {data.get('state')}{reason}"
    return None


class Timeline:
    """Prints one line per rule event: ``+00:12.3  R4 hold   caller 13800004  reminder 1 (30 s)``."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.t0 = time.time()
        self.numbers: dict[str, str] = {}  # call id -> caller number

    def line(self, at: float, topic: str, call_id: str, text: str) -> None:
        number = self.numbers.get(call_id, "?")
        self.out(f"{clock(at - self.t0)}  {topic:<9}  caller {number:<9} {text}")

    def event(self, kind: str, call_id: str, data: dict[str, Any], at: float) -> None:
        shown = describe(kind, data)
        if shown is not None and call_id in self.numbers:
            self.line(at, shown[0], call_id, shown[1])
