"""One map from a device to its agent (issue 15): ``AgentConfig.device_key`` and
``agents_by_device``, used by the ring, hold and transfer settings alike."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.ami.away import AwaySettings
from ivr.ami.channels import Channel
from ivr.hold.session import HoldSettings
from ivr.rings.settings import RingSettings
from ivr.rules.dialing import device_key
from ivr.sections import (
    AgentConfig,
    HoldConfig,
    PromptsConfig,
    RingsConfig,
    SwitchConfig,
    TransferConfig,
    UnclearConfig,
    agents_by_device,
)
from ivr.transfer.settings import TransferSettings
from ivr.transfer.targets import agent_number
from ivr.unclear.session import UnclearSettings
from tests.properties import examples

AGENTS = [
    AgentConfig("1001"),
    AgentConfig("1002", "Bob", "PJSIP/1002/sip:1002@10.0.0.2"),
    AgentConfig("1003", dial="Local/1003@agents/n"),
]
CHANNELS = {"PJSIP/1001-0000002a": "1001", "PJSIP/1002-000000ff": "1002", "Local/1003@agents-00000001;1": "1003"}


def test_one_map_for_rings_hold_and_transfer() -> None:
    by_device = agents_by_device(AGENTS)
    assert list(by_device) == ["PJSIP/1001", "PJSIP/1002", "Local/1003@agents"]
    rings = RingSettings.from_config(RingsConfig(), SwitchConfig(), AGENTS)
    hold = HoldSettings.from_config(HoldConfig(), SwitchConfig(), PromptsConfig(), AGENTS)
    transfer = TransferSettings.from_config(TransferConfig(), HoldConfig(), SwitchConfig(), PromptsConfig(), AGENTS)
    assert rings.agents == {k: a.number for k, a in by_device.items()}
    assert hold.agents == {k: a.name or a.number for k, a in by_device.items()}
    for channel, number in CHANNELS.items():
        assert by_device[device_key(channel)].number == number
        assert rings.agents[device_key(channel)] == number
        assert hold.agents[device_key(channel)] in (number, "Bob")
        assert agent_number(channel, transfer.agents) == number


def test_hold_and_unclear_share_one_settings_shape() -> None:
    """Both features take callers aside: the same fields from the same sections, one
    lookup of the agent's name (the unclear line once keyed its map by the dial string,
    so an agent dialled as ``PJSIP/1002/sip:...`` had no name there)."""
    switch, prompts = SwitchConfig(language="zh-CN"), PromptsConfig(sound_prefix="custom")
    hold = HoldSettings.from_config(HoldConfig(), switch, prompts, AGENTS)
    unclear = UnclearSettings.from_config(UnclearConfig(), switch, prompts, AGENTS)
    shared = AwaySettings(**AwaySettings.shared(switch, prompts, AGENTS))
    for s in (hold, unclear):
        assert isinstance(s, AwaySettings)
        assert (s.language, s.sound_prefix, s.agents) == (shared.language, shared.sound_prefix, shared.agents)
        assert s.sound("hold_thanks") == "custom/zh-CN/hold_thanks"
    for channel, number in CHANNELS.items():
        ch = Channel(uniqueid="1.1", linkedid="1.1", name=channel)
        assert hold.agent_name(ch) == unclear.agent_name(ch) == ("Bob" if number == "1002" else number)
    stranger = Channel(uniqueid="1.2", linkedid="1.2", name="PJSIP/9999-00000001")
    assert unclear.agent_name(stranger) == "PJSIP/9999"


@settings(max_examples=examples(100))
@given(
    number=st.from_regex(r"[0-9]{2,6}", fullmatch=True),
    form=st.sampled_from(["", "PJSIP/{n}", "PJSIP/{n}/sip:{n}@host", "Local/{n}@agents/n", "Local/{n}@agents"]),
    suffix=st.integers(0, 0xFFFFFFFF),
)
def test_a_channel_of_the_device_finds_its_agent(number: str, form: str, suffix: int) -> None:
    agent = AgentConfig(number, dial=form.format(n=number))
    tech, _, rest = agent.device.partition("/")
    resource = rest.split("/", 1)[0]
    channel = f"{tech}/{resource}-{suffix:08x}" + (";1" if tech == "Local" else "")
    assert device_key(channel) == agent.device_key
    assert agents_by_device([agent]) == {agent.device_key: agent}
