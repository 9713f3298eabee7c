"""TransferService with a fake AMI, a fake FastAGI channel and a fake clock (no switch)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from structlog.testing import capture_logs

from ivr.agi.channel import AgiHangup
from ivr.ami.connection import AmiActionError
from ivr.ami.testing import LiveChannels
from ivr.errors import NoSuchCall
from ivr.events import EventBus
from ivr.once import Once, Send
from ivr.timers import TimerService
from ivr.transfer.service import TransferService
from ivr.transfer.settings import CallNotTransferable, TransferSettings
from ivr.transfer.targets import (
    InvalidTarget,
    agent_number,
    announcement,
    resolve_target,
)
from tests.fakes import HANGUP, Clock, FakeAgi, RecordingAmi

CALLER = {"Event": "CoreShowChannel", "Uniqueid": "c1", "Linkedid": "c1", "Channel": "PJSIP/trunk-00000001",
          "CallerIDNum": "6001", "BridgeId": "b1"}
AGENT = {"Event": "CoreShowChannel", "Uniqueid": "a1", "Linkedid": "c1", "Channel": "PJSIP/1001-00000002",
         "CallerIDNum": "6001", "BridgeId": "b1"}
AGENTS = {"1001": "PJSIP/1001", "1002": "PJSIP/1002"}


class FakeAmi(RecordingAmi):
    """The switch has the caller and the agent (``rows``, for CoreShowChannels)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = [CALLER, AGENT]
        self.live = LiveChannels(self.rows)  # what Status answers: the switch's own view
        self.replies["CoreShowChannels"] = lambda _action: [
            {"Response": "Success"}, *self.rows, {"Event": "CoreShowChannelsComplete"}]


def fake_target(clock: Clock, service: TransferService, uid: str, xid: str) -> FakeAgi:
    """The target's FastAGI session: a prompt plays 1 s on the fake clock; the machine's
    deadline fires as a wait runs out."""
    return FakeAgi(uid, channel="PJSIP/1002-00000003", args=(xid,), clock=clock, prompt_s=1.0,
                   settle=service.timers.settle)


@pytest.fixture
async def rig() -> AsyncIterator[tuple[TransferService, FakeAmi, Clock]]:
    clock = Clock(100.0)
    timers = TimerService(clock=clock)
    ami = FakeAmi()
    service = TransferService(ami, TransferSettings(sounds="ivr/en-US", ring_limit=20, confirm_timeout=10,
                                                    agents=AGENTS), timers=timers, bus=EventBus())
    service.attach()
    yield service, ami, clock
    await service.close()
    await timers.close()


async def settle(service: TransferService) -> None:
    """Until the service's tasks (and the tasks they start) are done, bounded."""
    async with asyncio.timeout(5):
        while service._tasks:
            await asyncio.gather(*list(service._tasks))


def outcome(service: TransferService, name: str) -> float:
    return service.metrics.registry.get_sample_value("ivr_transfers_total", {"outcome": name}) or 0.0


async def test_confirmed_transfer(rig) -> None:
    service, ami, clock = rig
    xfer = await service.transfer("c1", "1002")
    (redirect,) = ami.named("Redirect")
    assert redirect["Channel"] == CALLER["Channel"] and redirect["Context"] == "ivr-transfer-wait"
    assert redirect["ExtraChannel"] == AGENT["Channel"] and redirect["ExtraContext"] == "ivr-transfer-agent"
    (originate,) = ami.named("Originate")
    assert originate["Channel"] == "PJSIP/1002" and originate["ChannelId"] == xfer.target_uid
    assert "OtherChannelId" not in originate and originate["CallerID"] == '"6001" <6001>'
    variables = {a["Variable"]: a["Value"] for a in ami.named("Setvar") if a["Channel"] == "c1"}
    assert variables["IVR_XFER_SOUNDS"] == "ivr/en-US" and variables["IVR_XFER_AGENT"] == AGENT["Channel"]

    ami.event(Event="Newstate", Uniqueid=xfer.target_uid, ChannelState="5")
    ami.event(Event="DialEnd", DestUniqueid=xfer.target_uid, DialStatus="ANSWER")
    await settle(service)
    target = fake_target(clock, service, xfer.target_uid, xfer.id)
    target.on_play[announcement("6001", "1001")[1]] = lambda: target.press("1")  # 1 as prompt 2 starts
    await service.target_agi(target)
    assert target.played() == announcement("6001", "1001")[:2]
    assert target.variables == {"IVR_XFER_RESULT": "confirmed"}
    assert ami.states() == ["offered", "ringing", "answered", "confirmed", "completed"]
    connect = ami.named("Redirect")[-1]
    assert connect["Context"] == "ivr-transfer-connect"
    assert {"Action": "Setvar", "Channel": "c1", "Variable": "IVR_XFER_TARGET",
            "Value": target.channel} in ami.actions
    assert not ami.named("Hangup")  # the agent stays until the caller is with the target
    ami.event(Event="BridgeEnter", Uniqueid="c1", BridgeUniqueid="b2")
    await settle(service)
    assert [a["Channel"] for a in ami.named("Hangup")] == ["a1"]
    assert service.transfers == {}
    assert outcome(service, "completed") == 1
    assert service.metrics.registry.get_sample_value("ivr_transfer_confirm_seconds_sum") == 1.0  # prompt 1


async def test_silence_after_the_announcement_times_out(rig) -> None:
    service, ami, clock = rig
    xfer = await service.transfer("c1", "1002")
    target = fake_target(clock, service, xfer.target_uid, xfer.id)
    await service.target_agi(target)
    assert target.played() == announcement("6001", "1001")
    assert ami.states() == ["offered", "answered", "timeout", "returned"]
    assert {"Action": "Hangup", "Channel": xfer.target_uid} in ami.actions
    back = ami.named("Redirect")[-1]
    assert back["Context"] == "ivr-transfer-return"
    assert ami.named("Setvar")[-1] == {"Action": "Setvar", "Channel": "c1", "Variable": "IVR_XFER_AGENT",
                                       "Value": AGENT["Channel"]}
    assert outcome(service, "timeout") == 1


async def test_refusal_and_target_hangup(rig) -> None:
    service, ami, clock = rig
    xfer = await service.transfer("c1", "1002")
    refuses = fake_target(clock, service, xfer.target_uid, xfer.id)
    refuses.press("2")
    await service.target_agi(refuses)
    assert ami.states()[-2:] == ["refused", "returned"]

    ami.actions.clear()
    xfer = await service.transfer("c1", "1002")
    hangs_up = fake_target(clock, service, xfer.target_uid, xfer.id)
    hangs_up.press(HANGUP)  # during the first prompt
    with pytest.raises(AgiHangup):
        await service.target_agi(hangs_up)
    assert ami.states() == ["offered", "answered", "hangup", "returned"]


@pytest.mark.parametrize(("status", "state"), [("BUSY", "busy"), ("CONGESTION", "busy"),
                                                ("CHANUNAVAIL", "busy")])
async def test_failed_dial_returns_the_caller(rig, status: str, state: str) -> None:
    service, ami, _ = rig
    xfer = await service.transfer("c1", "1002")
    ami.event(Event="DialEnd", DestUniqueid=xfer.target_uid, DialStatus=status)
    await settle(service)
    assert ami.states() == ["offered", state, "returned"]
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-return"


async def test_no_answer_after_the_agent_left_goes_to_the_queue(rig) -> None:
    service, ami, clock = rig
    xfer = await service.transfer("c1", "1002")
    ami.event(Event="Hangup", Uniqueid="a1")
    await settle(service)
    assert ami.states() == ["offered"]  # an agent hang-up completes nothing
    clock.t += 20.0
    await service.timers.settle()
    await settle(service)
    await service.timers.settle()
    assert ami.states() == ["offered", "noanswer", "returned"]
    assert {"Action": "Setvar", "Channel": "c1", "Variable": "IVR_XFER_AGENT", "Value": ""} in ami.actions
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-return"
    assert {"Action": "Hangup", "Channel": xfer.target_uid} in ami.actions


async def test_caller_hangup_releases_target_and_agent(rig) -> None:
    service, ami, _ = rig
    xfer = await service.transfer("c1", "1002")
    ami.event(Event="Hangup", Uniqueid="c1")
    await settle(service)
    assert ami.states() == ["offered", "abandoned"]
    assert {a["Channel"] for a in ami.named("Hangup")} == {"a1", xfer.target_uid}
    assert outcome(service, "abandoned") == 1 and service.transfers == {}


def key_event(row: dict[str, str], target: str) -> dict[str, str]:
    """UserEvent IvrTransferRequest as the switch raises it on ``row``'s channel."""
    return {"Event": "UserEvent", "UserEvent": "IvrTransferRequest", "Uniqueid": row["Uniqueid"],
            "Linkedid": row["Linkedid"], "Channel": row["Channel"], "Target": target}


def refused(service: TransferService) -> float:
    return service.metrics.registry.get_sample_value("ivr_transfer_keys_refused_total") or 0.0


async def test_feature_code_request(rig) -> None:
    service, ami, _ = rig
    ami.event(**key_event(AGENT, "1002"))
    await settle(service)
    assert ami.states() == ["offered"]
    (xfer,) = service.transfers.values()
    assert xfer.caller == "c1" and xfer.agent_number == "1001"
    # an agent (or queue) target gets the agent keys once it confirms (ivr-transfer.conf)
    assert "IVR_XFER_KEYS=yes" in ami.named("Originate")[0]["Variable"]
    # a bad target keyed on the phone is logged and refused, nothing moves
    ami.event(**key_event(AGENT, "99x"))
    await settle(service)
    assert len(ami.named("Redirect")) == 1
    assert refused(service) == 0


async def test_transfer_key_from_a_caller_or_unknown_channel_is_refused(rig) -> None:
    """Issue 13: only an agent's leg may transfer; the caller's channel (or any channel
    that is not a known agent leg) is refused, logged and counted, and nothing moves."""
    from structlog.testing import capture_logs

    service, ami, _ = rig
    stranger = {**AGENT, "Uniqueid": "s1", "Channel": "PJSIP/anonymous-00000007"}
    with capture_logs() as logs:
        ami.event(**key_event(CALLER, "900123"))  # the caller keyed *2 900123#
        ami.event(**key_event(stranger, "1002"))  # a channel that is no agent's
        ami.event(**{**key_event(AGENT, "1002"), "Channel": ""})  # no channel: unknown
        await settle(service)
    assert ami.actions == [] and service.transfers == {}
    assert refused(service) == 3
    assert [e["event"] for e in logs] == ["transfer.request_refused_not_agent"] * 3
    assert logs[0]["log_level"] == "warning" and logs[0]["target"] == "900123"


async def test_agent_leg_check_is_injectable(rig) -> None:
    """The controller passes its ring monitor's view: a dialled agent leg that is not a
    configured device (a hunt entry, a queue member) may transfer."""
    _, ami, clock = rig
    timers = TimerService(clock=clock)
    seen: list[tuple[str, str]] = []

    def agent_leg(uid: str, ch: str) -> bool:
        seen.append((uid, ch))
        return uid == "a1"

    service = TransferService(ami, TransferSettings(agents=AGENTS), timers=timers, agent_leg=agent_leg)
    service.attach()
    ami.event(**key_event({**AGENT, "Channel": "Local/1001@hunt-00000001;1"}, "1002"))
    await settle(service)
    assert seen == [("a1", "Local/1001@hunt-00000001;1")] and len(service.transfers) == 1
    await service.close()
    await timers.close()


async def test_outside_numbers_only_with_allow_numbers(rig) -> None:
    import re

    service, ami, clock = rig
    ami.event(**key_event(AGENT, "900123"))  # off by default: refused, nothing moves
    await settle(service)
    assert ami.named("Redirect") == []
    with pytest.raises(InvalidTarget, match="allow_numbers"):
        await service.transfer("c1", "number:13800138000")
    timers = TimerService(clock=clock)
    allowed = TransferService(ami, TransferSettings(agents=AGENTS, allow_numbers=(re.compile("1[0-9]{10}"),)),
                              timers=timers)
    xfer = await allowed.transfer("c1", "13800138000")
    assert xfer.target.dial == "Local/13800138000@ivr-transfer-number"
    assert "IVR_XFER_KEYS=no" in ami.named("Originate")[-1]["Variable"]  # no keys for outsiders
    with pytest.raises(InvalidTarget, match="allow_numbers"):
        await allowed.transfer("c1", "900123")
    await allowed.close()
    await timers.close()


async def test_refusals(rig) -> None:
    service, ami, _ = rig
    with pytest.raises(NoSuchCall):
        await service.transfer("nope", "1002")
    with pytest.raises(InvalidTarget):
        await service.transfer("c1", "Local/s@ivr-inbound")  # dial strings only when allowed
    ami.rows = [{**CALLER, "BridgeId": ""}, AGENT]
    with pytest.raises(CallNotTransferable, match="not connected to an agent"):
        await service.transfer("c1", "1002")
    ami.rows = [CALLER, AGENT]
    await service.transfer("c1", "1002")
    with pytest.raises(CallNotTransferable, match="already"):
        await service.transfer("c1", "1002")


async def test_redirect_failure_leaves_the_call_alone(rig) -> None:
    service, ami, _ = rig
    ami.fail.add("Redirect")
    with pytest.raises(AmiActionError):
        await service.transfer("c1", "1002")
    assert service.transfers == {} and not ami.named("Originate")


async def test_originate_failure_is_a_failed_dial(rig) -> None:
    service, ami, _ = rig
    ami.fail.add("Originate")
    await service.transfer("c1", "1002")
    assert ami.states() == ["offered", "busy", "returned"]
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-return"


def test_resolve_target() -> None:
    import re

    assert resolve_target("1002", AGENTS).dial == "PJSIP/1002"
    assert resolve_target("agent:1001", AGENTS).label == "1001"
    q = resolve_target("queue:support", AGENTS)
    assert (q.kind, q.dial) == ("queue", "Local/support@ivr-transfer-queue")
    mobiles = [re.compile(r"1[0-9]{10}")]
    n = resolve_target("13800138000", AGENTS, allow_numbers=mobiles)
    assert (n.label, n.dial) == ("number:13800138000", "Local/13800138000@ivr-transfer-number")
    assert resolve_target("number:13800138000", AGENTS, allow_numbers=mobiles).kind == "number"
    # outside numbers are off unless allowed, and a pattern matches the whole number
    for bad in ("13800138000", "number:13800138000", "900123"):
        with pytest.raises(InvalidTarget, match="allow_numbers"):
            resolve_target(bad, AGENTS)
    for bad in ("138001380001", "913800138000", "900123", "+13800138000"):
        with pytest.raises(InvalidTarget, match="allow_numbers"):
            resolve_target(bad, AGENTS, allow_numbers=mobiles)
    assert resolve_target("PJSIP/2001", AGENTS, allow_dial=True).dial == "PJSIP/2001"
    for bad in ("", "agent:9999", "queue:a b", "fax:1", "12ab", "PJSIP/2001", "x" * 40):
        with pytest.raises(InvalidTarget):
            resolve_target(bad, AGENTS)
    for bad in ("PJSIP/a,b", "Local/x@c)(", "PJSIP/a&PJSIP/b"):
        with pytest.raises(InvalidTarget):
            resolve_target(bad, AGENTS, allow_dial=True)


def test_agent_number() -> None:
    assert agent_number("PJSIP/1002-0000000a", AGENTS) == "1002"
    assert agent_number("Local/1001@test-agent-00000001;1", {}) == "1001"
    assert agent_number("PJSIP/desk-0000000a", {}, caller_id="Agent 1003") == "1003"


async def test_forged_caller_hangup_releases_nobody(rig, monkeypatch) -> None:
    """Issue 13 (2d): a Hangup event for the caller that the switch does not confirm (the
    caller is still there) neither ends the transfer nor hangs up the agent or target."""
    monkeypatch.setattr("ivr.ami.confirm.GONE_WAIT", 0.1)
    service, ami, _ = rig
    xfer = await service.transfer("c1", "1002")
    with capture_logs() as logs:
        ami.event(forged=True, Event="Hangup", Uniqueid="c1")
        await settle(service)
    assert ami.named("Hangup") == [] and ami.states() == ["offered"]
    assert service.transfers == {xfer.id: xfer}
    assert [e["reason"] for e in logs if e["event"] == "transfer.hangup_event_refused"] == [
        "the switch still has the channel (forged or stale event)"]
    # the real hang-up afterwards still releases both
    ami.event(Event="Hangup", Uniqueid="c1")
    await settle(service)
    assert {a["Channel"] for a in ami.named("Hangup")} == {"a1", xfer.target_uid}


async def test_agent_of_another_call_is_never_hung_up(rig) -> None:
    """The agent leg the controller would release belongs to another call now (its
    Linkedid differs): nothing is hung up, and the refusal is logged."""
    service, ami, _ = rig
    xfer = await service.transfer("c1", "1002")
    ami.live.rows["a1"]["Linkedid"] = "other-call"
    with capture_logs() as logs:
        ami.event(Event="Hangup", Uniqueid="c1")
        await settle(service)
    assert [a["Channel"] for a in ami.named("Hangup")] == [xfer.target_uid]  # the target only
    assert any(e["event"] == "ami.hangup_refused" and e["reason"].startswith("Linkedid differs") for e in logs)


async def test_a_standby_leaves_the_transfer_key_to_the_leader(rig) -> None:
    """Issue 17: a controller pair's standby sees the agent's key too; it tries nothing
    (the leader acts) and logs nothing above debug."""
    service, ami, _ = rig
    service.acting = lambda: False
    with capture_logs() as logs:
        ami.event(**key_event(AGENT, "1002"))
        await settle(service)
    assert ami.actions == [] and service.transfers == {}
    assert [(e["event"], e["log_level"]) for e in logs] == [("transfer.standby_skipped", "debug")]


# -- issue 17: the new leader takes over a transfer whose controller died ----------------
XID = "ivrx1a2b-7"
WAITING = {**CALLER, "Context": "ivr-transfer-wait", "BridgeId": ""}
AWAY = {**AGENT, "Context": "ivr-transfer-agent", "BridgeId": ""}


def switch_after_death(ami: FakeAmi, target_state: str | None, **variables: str) -> None:
    """What the switch shows the new leader: the caller waiting, the agent hearing the
    ringback, the target leg (ChannelId <id>-t) ringing / up / gone, and the caller's
    variables as the dead node and the dialplan left them."""
    rows = [WAITING, AWAY]
    if target_state is not None:
        rows.append({"Event": "CoreShowChannel", "Uniqueid": f"{XID}-t", "Linkedid": f"{XID}-t",
                     "Channel": "PJSIP/1002-00000009", "ChannelState": target_state, "Context": "ivr-transfer-target"})
    ami.rows = rows
    values = {"IVR_XFER_ID": XID, "IVR_XFER_TO": "1002", "IVR_XFER_AGENT": AGENT["Channel"],
              "IVR_XFER_T0": str(int(1.8e9) - 5), **variables}
    ami.replies["Getvar"] = lambda action: {"Response": "Success", "Value": values.get(action["Variable"], "")}


async def test_a_ringing_transfer_is_taken_over_and_completes_on_the_targets_confirmation(rig) -> None:
    from ivr.transfer import take_over

    service, ami, clock = rig
    switch_after_death(ami, "5")
    assert await take_over(service, wall=lambda: 1.8e9) == [XID]
    xfer = service.transfers[XID]
    assert (xfer.machine.state, xfer.machine.deadline) == ("ringing", 100.0 - 5 + 20)  # ring limit from the offer
    assert xfer.agent == "a1" and xfer.target.label == "1002" and ami.states() == []  # nothing said twice
    assert await take_over(service, wall=lambda: 1.8e9) == []  # known: not taken twice
    ami.event(Event="DialEnd", DestUniqueid=f"{XID}-t", DialStatus="ANSWER")
    await settle(service)
    target = fake_target(clock, service, f"{XID}-t", XID)
    target.press("1")
    await service.target_agi(target)
    assert ami.states() == ["answered", "confirmed", "completed"]
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-connect"


async def test_a_taken_over_transfer_whose_target_is_gone_returns_the_caller_at_once(rig) -> None:
    from ivr.transfer import take_over

    service, ami, _ = rig
    switch_after_death(ami, None)
    service.legs.saw({"Event": "Newchannel", "Uniqueid": f"{XID}-t"})  # this node saw it: dialled, now gone
    assert await take_over(service, wall=lambda: 1.8e9) == [XID]
    await settle(service)
    assert ami.states() == ["hangup", "returned"] and ami.named("Originate") == []
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-return"


class TakenOnce(Once):
    """ivr.once as a pair's PostgreSQL would answer: the steps in ``taken`` were claimed
    by the old leader (skipped), any other is claimed now and sent."""

    def __init__(self, *taken: str) -> None:
        super().__init__()
        self.taken, self.keys = taken, list[str]()

    async def run(self, key: str, send: Send, *, still: Callable[[], bool] | None = None, here: bool = False) -> str:
        self.keys.append(key)
        if key.rsplit("/", 1)[-1] in self.taken:
            return self._count("skipped")
        return await super().run(key, send, still=still, here=here)


@pytest.mark.parametrize(("taken", "followed", "step"), [
    ((), False, "dial"),  # the old leader died before it took the dial's key
    (("dial",), True, "dial-again"),  # it took the key, its Originate never reached the switch
])
async def test_a_transfer_whose_leader_died_before_the_originate_is_dialled_once_and_completes(
        rig, taken, followed, step) -> None:
    """Issue 17: the caller waits, no target leg was ever seen on the switch: the new
    leader dials the target (once, under the first free key), the ring limit from this
    dial; the target's 1 completes the transfer; nothing announced twice."""
    from ivr.transfer import take_over

    service, ami, clock = rig
    service.once = once = TakenOnce(*taken)
    if followed:
        service.legs.following_since = 1.8e9 - 60  # logged in long before the wait began
    switch_after_death(ami, None)
    assert await take_over(service, wall=lambda: 1.8e9) == [XID]
    await settle(service)
    (originate,) = ami.named("Originate")
    assert originate["ChannelId"] == f"{XID}-t" and originate["Channel"] == "PJSIP/1002"
    assert originate["Timeout"] == str((20 + 2) * 1000)  # the whole ring limit: 5 s waited, 15 s to spare
    assert once.keys[-1] == f"c1/transfer/{XID}/{step}" and len(once.keys) == len(taken) + 1
    xfer = service.transfers[XID]
    assert (xfer.machine.state, xfer.machine.deadline) == ("offered", 100.0 + 20)
    ami.event(Event="Newstate", Uniqueid=f"{XID}-t", ChannelState="5")
    ami.event(Event="DialEnd", DestUniqueid=f"{XID}-t", DialStatus="ANSWER")
    await settle(service)
    target = fake_target(clock, service, f"{XID}-t", XID)
    target.press("1")
    await service.target_agi(target)
    assert ami.states() == ["ringing", "answered", "confirmed", "completed"]  # "offered": the old leader's
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-connect" and len(ami.named("Originate")) == 1


async def test_a_taken_key_without_a_gapless_view_of_the_switch_returns_the_caller(rig) -> None:
    """The old leader took the dial's key and this node's AMI link had a gap since the wait
    began (it could have missed the target leg): never dialled twice, the caller returns."""
    from ivr.transfer import take_over

    service, ami, _ = rig
    service.once = TakenOnce("dial")
    service.legs.following_since = 1.8e9 - 3  # logged in after the wait began
    switch_after_death(ami, None)
    assert await take_over(service, wall=lambda: 1.8e9) == [XID]
    await settle(service)
    assert ami.named("Originate") == [] and ami.states() == ["busy", "returned"]
    assert ami.named("Redirect")[-1]["Context"] == "ivr-transfer-return"


async def test_a_transfer_too_close_to_the_dialplans_safety_net_is_not_dialled_again(rig) -> None:
    """Waited so long that the announcement and the confirmation would not fit before the
    dialplan's IVR_XFER_MAXWAIT (20 + 30 + 10 + 15 s): the caller returns now."""
    from ivr.transfer import take_over

    service, ami, _ = rig
    switch_after_death(ami, None, IVR_XFER_T0=str(int(1.8e9) - 32))
    assert await take_over(service, wall=lambda: 1.8e9) == [XID]
    await settle(service)
    assert ami.named("Originate") == [] and ami.states() == ["hangup", "returned"]


@pytest.mark.parametrize("variables", [
    {"IVR_XFER_ID": "ivrx1-7,Context: x"}, {"IVR_XFER_ID": ""}, {"IVR_XFER_TO": "99x"},
    {"IVR_XFER_T0": "yesterday"}, {"IVR_XFER_T0": "1000000000"},
])
async def test_a_transfer_that_does_not_hold_up_is_left_to_the_dialplan(rig, variables) -> None:
    from ivr.transfer import take_over

    service, ami, _ = rig
    switch_after_death(ami, "5", **variables)
    with capture_logs() as logs:
        assert await take_over(service, wall=lambda: 1.8e9) == []
    assert service.transfers == {} and {a["Action"] for a in ami.actions} == {"CoreShowChannels", "Getvar"}
    assert [e["event"] for e in logs] == ["transfer.takeover_refused"]


def test_target_legs_seen_are_only_transfer_target_ids_and_bounded() -> None:
    from ivr.transfer.legs import TargetLegs

    wall = Clock(1.8e9)
    legs = TargetLegs(wall, limit=2)
    assert not legs.followed_since(1.8e9)  # never logged in: it knows nothing
    legs.connected(1)
    assert legs.followed_since(1.8e9 + 1) and not legs.followed_since(1.8e9 + 0.5)
    wall.advance(10)
    legs.connected(1)  # a resync (a takeover) on the same login: no gap
    assert legs.followed_since(1.8e9 + 1)
    legs.connected(2)  # a new login: what came before it may be lost
    assert not legs.followed_since(1.8e9 + 1) and legs.followed_since(1.8e9 + 11)
    legs.saw({"Event": "Newchannel", "Uniqueid": "ivrx1a-1-t"})
    legs.saw({"Event": "DialBegin", "Uniqueid": "c1", "DestUniqueid": "ivrx1a-2-t"})
    legs.saw({"Event": "Newchannel", "Uniqueid": "ivrx1a-3-t-2"})  # a Local target's ;2 half: not the leg
    legs.saw({"Event": "Newchannel", "Uniqueid": "1795.22"})
    assert legs.seen("ivrx1a-1-t") and legs.seen("ivrx1a-2-t") and not legs.seen("ivrx1a-3-t-2")
    legs.saw({"Event": "Newchannel", "Uniqueid": "ivrx1a-4-t"})
    assert not legs.seen("ivrx1a-1-t") and legs.seen("ivrx1a-4-t")  # the oldest forgotten first
