"""The doctor's least-privilege list matches what the controller really sends; its systemname check."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

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


# -- a node of a controller pair (issue 17) ------------------------------------------------
LEADER_URL = "http://10.0.0.1:8780"
HEALTHY = {"role": "standby", "checks": {"ami": {"ok": True}}}


class PairDoctor(_Doctor):
    """The cluster checks with the node's /healthz answers and the lease row given."""

    def __init__(self, lease: dict[str, Any] | Exception | None, health: dict[str, Any]) -> None:
        super().__init__(Config(cluster=ClusterConfig(node="b", switch="east")), timeout=1.0)
        self.lease_row, self.answers = lease, health

    async def _health(self, url: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self.answers.get(url)
        return answer

    async def _lease(self) -> dict[str, Any] | None:
        if isinstance(self.lease_row, Exception):
            raise self.lease_row
        return self.lease_row


def lease(**kw: object) -> dict[str, object]:
    return {"node": "a", "token": 7, "live": True, "renewed_ago": 0.1, "expired_ago": -1.0,
            "api_url": LEADER_URL, **kw}


async def pair_checks(row: dict[str, object] | Exception | None, own: object = HEALTHY,
                      leader: object = None) -> dict[str, Check]:
    doctor = PairDoctor(row, {"http://127.0.0.1:8780": own,
                              LEADER_URL: leader if leader is not None else {"role": "leader"}})
    await doctor._cluster()
    return {c.name: c for c in doctor.checks}


async def test_a_healthy_standby_names_its_leader():
    checks = await pair_checks(lease())
    assert checks["cluster node"].ok and "healthy standby of switch 'east'" in checks["cluster node"].detail
    leader = checks["cluster leader"]
    assert leader.ok and "node 'a' leads switch 'east' (token 7" in leader.detail and LEADER_URL in leader.detail


@pytest.mark.parametrize(("row", "own", "leader", "failed", "says"), [
    (None, HEALTHY, None, "cluster leader", "no node leads switch 'east': none has ever held its lease"),
    (lease(live=False, expired_ago=3.5), HEALTHY, None, "cluster leader", "expired 3.5 s ago"),
    (lease(renewed_ago=5.0), HEALTHY, None, "cluster leader", "the lease is stale"),
    (lease(api_url=None), HEALTHY, None, "cluster leader", "published no API address"),
    (lease(), HEALTHY, {"role": "standby"}, "cluster leader", "gives role=standby"),
    (OSError("connection refused"), HEALTHY, None, "cluster leader", "cannot read the lease"),
    (lease(), None, None, "cluster node", "does not answer at http://127.0.0.1:8780/healthz"),
    (lease(), {"role": "standby", "checks": {"ami": {"ok": False}}}, None, "cluster node", "AMI not connected"),
])
async def test_what_the_pair_check_fails_on(row, own, leader, failed, says):
    checks = await pair_checks(row, own, leader)
    assert [c.name for c in checks.values() if not c.ok] == [failed], [c.line() for c in checks.values()]
    assert says in checks[failed].detail, checks[failed].line()
