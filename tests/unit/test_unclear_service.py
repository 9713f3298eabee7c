"""UnclearService with the typed fakes (RecordingAmi, a fake FastAGI channel, a fake clock):
the caller taken aside like hold, the script's stages and times, clear speech, the key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ivr.agi.wake import PAUSE_GUARD
from ivr.ami.channels import ChannelTracker
from ivr.events import EventBus
from ivr.unclear import UnclearError, UnclearService, UnclearSettings
from ivr.unclear.metrics import UnclearMetrics
from ivr.unclear.session import BadReason, NoSuchCall, NotAside
from tests.fakes import AsideAmi, BusLog, Clock, FakeAgi, drain, idle

CALLER, AGENT = "200.1", "200.3"
PROMPT_S = 3.0  # every fake prompt "plays" this long


class FakeAmi(AsideAmi):
    def __init__(self) -> None:
        super().__init__("Local/keep@ivr-unclear-00000009;1")

    def stages(self) -> list[str]:
        return [a["Stage"] for a in self.sent("UserEvent") if a["UserEvent"] == "IvrUnclearLine"]


@pytest.fixture
async def world() -> Any:
    ami, tracker, clock, bus, metrics = FakeAmi(), ChannelTracker(), Clock(), EventBus(), UnclearMetrics()
    service = UnclearService(ami, tracker, UnclearSettings(agents={"PJSIP/1001": "Alice"}),
                             bus=bus, metrics=metrics, clock=clock, wall=lambda: 1.7e9)
    tracker.attach(ami)
    service.attach()
    for uid, name in ((CALLER, "Local/c@x-00000001;1"), (AGENT, "PJSIP/1001-00000002")):
        tracker.handle({"Event": "BridgeEnter", "Uniqueid": uid, "Linkedid": CALLER, "Channel": name,
                        "BridgeUniqueid": "b1", "Context": "ivr-agents"})
    events = BusLog(bus)
    yield ami, service, clock, events, metrics
    events.close()
    await service.close()


async def run_agi(ami: FakeAmi, service: UnclearService, clock: Clock, *hooks: Any,
                  variables: dict[str, str] | None = None) -> FakeAgi:
    """The caller's route runs to its end (``variables``: what the channel already has)."""
    agi = FakeAgi(CALLER, channel="Local/c@x-00000001;1", clock=clock, prompt_s=PROMPT_S)  # PROMPT_S a prompt
    agi.variables.update(variables or {})
    agi.hooks.extend(hooks)
    ami.agi = agi
    await asyncio.wait_for(service.agi_unclear(agi), 5)
    await idle()  # what the route left running has run (a caller going back waits for its BridgeEnter)
    return agi


def talk(ami: FakeAmi, ms: int) -> None:
    ami.event({"Event": "ChannelTalkingStart", "Uniqueid": CALLER})
    ami.event({"Event": "ChannelTalkingStop", "Uniqueid": CALLER, "Duration": str(ms)})


async def test_taken_aside_like_hold(world: Any) -> None:
    ami, service, *_ = world
    described = await service.start(CALLER, "faint")
    assert described["agent"] == "Alice" and described["reason"] == "faint" and described["via"] == "api"
    [orig] = ami.sent("Originate")
    assert orig["Application"] == "BridgeAdd" and orig["Data"] == "PJSIP/1001-00000002"  # by name (prefix match)
    assert orig["Channel"] == "Local/keep@ivr-unclear/n"
    [setvar] = ami.sent("Setvar")
    assert (setvar["Variable"], setvar["Value"]) == ("IVR_UNCLEAR_AGENT", "PJSIP/1001-00000002")
    [redirect] = ami.sent("Redirect")
    assert (redirect["Context"], redirect["Exten"]) == ("ivr-unclear", "unclear")
    with pytest.raises(UnclearError):
        await service.start(CALLER, "noisy")


async def test_still_faint_ask_ask_again_goodbye_release(world: Any) -> None:
    ami, service, clock, events, metrics = world
    await service.start(CALLER, "faint")
    agi = await run_agi(ami, service, clock, lambda a, what: talk(ami, 200))  # too short
    played = [w for _, w in agi.log if w.startswith("play")]
    assert played == ["play unclear_ask", "play unclear_ask", "play unclear_goodbye_faint"]
    assert agi.variables["TALK_DETECT(set)"] == "300,512"
    assert agi.variables["IVR_RESULT"] == "done"
    ends = {w: t for t, w in agi.log if w.startswith("end play")}
    goodbye_end = ends["end play unclear_goodbye_faint"]
    waits = [(t, w) for t, w in agi.log if w in ("wait", "end wait")]
    released_at, what = waits[-1]
    assert what == "end wait" and released_at == pytest.approx(goodbye_end + 5.0 + PAUSE_GUARD), "release 5 s after"
    assert ami.stages() == ["ask", "ask-again", "goodbye", "release"]
    assert ami.sent("Hangup")[-1]["Channel"].startswith("ivrkeep-")  # the keeper, by its Uniqueid, "the keeper goes"
    kinds = [(e.kind, e.data.get("stage")) for e in events]
    assert kinds[0] == ("unclear.start", None) and ("call.released", None) in kinds
    assert [s for k, s in kinds if k == "unclear.stage"] == ["ask", "ask-again", "goodbye", "release"]
    assert metrics.value("ivr_unclear_outcomes_total", {"outcome": "released", "reason": "faint"}) == 1
    assert not service.sessions


async def test_clear_speech_after_first_ask_returns(world: Any) -> None:
    ami, service, clock, _, metrics = world
    await service.start(CALLER, "noisy")

    def speak_in_first_pause(agi: FakeAgi, what: str) -> None:
        if what == "wait":
            talk(ami, 1500)

    agi = await run_agi(ami, service, clock, speak_in_first_pause)
    assert [w for _, w in agi.log if w.startswith("play")] == ["play unclear_ask"]
    assert agi.variables["IVR_RESULT"] == "back" and agi.variables["TALK_DETECT(remove)"] == ""
    assert ami.stages() == ["ask", "returned"]
    assert next(a for a in ami.sent("UserEvent") if a["Stage"] == "returned")["During"] == "pause1"
    assert ami.sent("PlayDTMF") and ami.sent("PlayDTMF")[0]["Digit"] == "D", "the wait was woken"
    # the dialplan's BridgeAdd puts the caller back; then the keeper is hung up
    assert not ami.sent("Hangup")
    ami.event({"Event": "BridgeEnter", "Uniqueid": CALLER, "BridgeUniqueid": "b1", "Channel": "x"})
    await drain(service)
    assert ami.sent("Hangup")[0]["Channel"].startswith("ivrkeep-")  # the keeper, by its Uniqueid
    assert metrics.value("ivr_unclear_outcomes_total", {"outcome": "returned", "reason": "noisy"}) == 1


async def test_clear_speech_cuts_a_prompt(world: Any) -> None:
    ami, service, clock, *_ = world
    await service.start(CALLER, "faint")
    agi = await run_agi(ami, service, clock,
                        lambda a, what: talk(ami, 900) if what == "play unclear_ask" else None)
    assert agi.variables["IVR_RESULT"] == "back"
    assert ami.stages() == ["ask", "returned"]


@pytest.mark.parametrize("ms", [100, 499, 10_001, 60_000])
async def test_bursts_that_are_not_clear(world: Any, ms: int) -> None:
    ami, service, clock, *_ = world
    await service.start(CALLER, "noisy")
    agi = await run_agi(ami, service, clock, lambda a, what: talk(ami, ms) if what == "wait" else None)
    assert agi.variables["IVR_RESULT"] == "done"
    assert ami.stages()[-1] == "release"


async def test_key_from_agent_starts_from_caller_refused(world: Any) -> None:
    ami, service, _, _, metrics = world
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint", "Uniqueid": CALLER,
               "Linkedid": CALLER, "Channel": "Local/c@x-00000001;1"})
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint", "Uniqueid": "999.9",
               "Linkedid": CALLER, "Channel": "Local/stranger"})
    await drain(service)
    assert not ami.sent("Originate") and metrics.value("ivr_unclear_keys_refused_total") == 2
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "noisy", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
    await drain(service)
    assert len(ami.sent("Originate")) == 1
    assert service.describe(service.sessions[CALLER])["via"] == "key"


async def test_injected_agent_leg_check(world: Any) -> None:
    ami, service, *_ = world
    service.agent_leg = lambda uid, channel: False  # the ring monitor knows no such leg
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "noisy", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
    await drain(service)
    assert not ami.sent("Originate")


async def test_errors(world: Any) -> None:
    _, service, *_ = world
    with pytest.raises(BadReason):
        await service.start(CALLER, "loud")
    with pytest.raises(NoSuchCall) as exc:
        await service.start("nope", "faint")
    assert exc.value.error_id == "no-such-call"
    assert service.agi_routes.keys() == {"unclear"}


async def test_caller_hangs_up(world: Any) -> None:
    ami, service, _, _, metrics = world
    await service.start(CALLER, "faint")
    ami.event({"Event": "Hangup", "Uniqueid": CALLER, "Channel": "Local/c@x-00000001;1", "Linkedid": CALLER})
    await drain(service)
    assert not service.sessions
    assert metrics.value("ivr_unclear_outcomes_total", {"outcome": "hungup", "reason": "faint"}) == 1
    assert ami.sent("Hangup")[-1]["Channel"].startswith("ivrkeep-")  # the keeper, by its Uniqueid


def test_settings_checked() -> None:
    with pytest.raises(ValueError, match="clear_min_ms < clear_max_ms"):
        UnclearSettings(clear_min_ms=600, clear_max_ms=500)
    with pytest.raises(ValueError, match="pause must be positive"):
        UnclearSettings(pause=0)
    assert UnclearSettings().is_clear(500) and not UnclearSettings().is_clear(499)


async def test_agent_key_again_takes_the_caller_back(world: Any) -> None:
    ami, service, clock, _, metrics = world
    ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint", "Uniqueid": AGENT,
               "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})
    await drain(service)
    assert CALLER in service.sessions

    def key_again_in_first_pause(agi: FakeAgi, what: str) -> None:
        if what == "wait":
            ami.event({"Event": "UserEvent", "UserEvent": "IvrUnclearKey", "Reason": "faint",
                       "Uniqueid": AGENT, "Linkedid": CALLER, "Channel": "PJSIP/1001-00000002"})

    agi = await run_agi(ami, service, clock, key_again_in_first_pause)
    assert agi.variables["IVR_RESULT"] == "back"
    returned = next(a for a in ami.sent("UserEvent") if a["Stage"] == "returned")
    assert (returned["During"], returned["By"]) == ("pause1", "agent")
    assert metrics.value("ivr_unclear_keys_refused_total") == 0


async def test_api_take_back(world: Any) -> None:
    ami, service, clock, *_ = world
    with pytest.raises(NotAside):
        await service.take_back(CALLER)
    await service.start(CALLER, "faint")
    assert (await service.take_back(CALLER))["call_id"] == CALLER
    agi = await run_agi(ami, service, clock)
    assert agi.log == [] and agi.variables["IVR_RESULT"] == "back", "taken back before any prompt"
    assert ami.stages() == ["returned"]
