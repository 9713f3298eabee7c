"""The doctor's least-privilege list matches what the controller really sends; its systemname check."""

from __future__ import annotations

import re
from pathlib import Path

import ivr
from ivr.doctor import DANGEROUS_ACTIONS, NEEDED_ACTIONS, Check, _Doctor
from ivr.sections import ClusterConfig, Config
from tests.fakes import RecordingAmi

SESSION_ACTIONS = {"Login", "Logoff", "ListCommands"}


def test_needed_actions_cover_every_action_the_package_sends():
    package = Path(ivr.__file__).parent
    sent = set()
    for path in package.rglob("*.py"):
        sent |= set(re.findall(r'"Action":\s*"([A-Za-z]+)"', path.read_text()))
    assert sent - SESSION_ACTIONS <= NEEDED_ACTIONS, sent - SESSION_ACTIONS - NEEDED_ACTIONS
    assert not NEEDED_ACTIONS & DANGEROUS_ACTIONS


def test_check_lines_are_readable():
    assert Check("AMI login", True, "ivr@127.0.0.1:5038").line() == "[ok] AMI login: ivr@127.0.0.1:5038"
    assert Check("tone zone", False, "x").line().startswith("[FAIL] tone zone")


async def doctor_asks_system_name(switch: str, reply: dict[str, str] | None) -> list[Check]:
    """The systemname check against a switch answering CoreSettings with ``reply``
    (None: the action is refused)."""
    ami = RecordingAmi()
    if reply is None:
        ami.fail.add("CoreSettings")
    else:
        ami.replies["CoreSettings"] = lambda action: {"Response": "Success", **reply}
    doctor = _Doctor(Config(cluster=ClusterConfig(switch=switch)), 1.0)
    await doctor._system_name(ami)
    return doctor.checks


async def test_a_switch_of_its_own_name_without_a_systemname_is_a_problem() -> None:
    """Issue 17: two switches without systemname make the same call ids on one database."""
    [check] = await doctor_asks_system_name("east", {"SystemName": "", "AsteriskVersion": "22.10.1"})
    assert not check.ok and check.name == "switch systemname"
    assert "systemname = east" in check.detail and "same" in check.detail
    [check] = await doctor_asks_system_name("east", {"SystemName": "east"})
    assert check.ok and "'east'" in check.detail
    [check] = await doctor_asks_system_name("east", None)
    assert not check.ok and "CoreSettings" in check.detail
    assert await doctor_asks_system_name("default", {"SystemName": ""}) == []  # one switch: nothing to collide with
