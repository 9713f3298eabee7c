"""`ivr doctor` against the real switch: passes on the embedded one, and names each
problem on a deliberately broken one."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from ivr.doctor import run_doctor
from ivr.switch.embedded import EmbeddedSwitch
from ivr.switch.host import Ports
from tests import REPO


def by_name(checks):
    return {c.name: c for c in checks}


def with_ami(config, **ami):
    return replace(config, ami=replace(config.ami, **ami))


async def test_doctor_passes_on_the_embedded_switch(switch, controller_config):
    checks = by_name(await run_doctor(controller_config(), timeout=10))
    assert [n for n, c in checks.items() if not c.ok] == [], [c.line() for c in checks.values()]
    assert set(checks) == {"AMI login", "AMI privileges", "ivr-inbound context", "FastAGI reachable",
                           "prompts in the sound path", "tone zone"}
    assert "answered by the doctor" in checks["FastAGI reachable"].detail


async def test_doctor_names_a_switch_of_its_own_name_without_systemname(switch, controller_config):
    """Issue 17: with a [cluster] switch name of its own, an Asterisk without systemname (the
    embedded switch A has none) makes bare call ids that another switch makes too."""
    checks = by_name(await run_doctor(controller_config('[cluster]\nswitch = "east"\n'), timeout=10))
    check = checks["switch systemname"]
    assert not check.ok and "systemname = east" in check.detail, check.line()
    assert [n for n, c in checks.items() if not c.ok] == ["switch systemname"]


async def test_doctor_uses_the_running_controller(switch, make_controller):
    ctl = await make_controller()
    checks = by_name(await run_doctor(ctl.config, timeout=10))
    assert checks["FastAGI reachable"].ok and "running controller" in checks["FastAGI reachable"].detail
    assert checks["prompts in the sound path"].ok


async def test_doctor_reports_a_wrong_secret(switch, controller_config):
    config = with_ami(controller_config(), secret="not-the-secret")
    checks = await run_doctor(config, timeout=3)
    assert len(checks) == 1 and not checks[0].ok
    assert checks[0].name == "AMI login" and "secret" in checks[0].detail


async def test_doctor_reports_too_much_privilege(switch, controller_config):
    config = with_ami(controller_config(), username=switch.username, secret=switch.secret)  # all classes
    checks = by_name(await run_doctor(config, timeout=10))
    assert not checks["AMI privileges"].ok
    assert "more privilege than needed" in checks["AMI privileges"].detail
    assert "Command" in checks["AMI privileges"].detail


@pytest.fixture
def broken_switch(tmp_path: Path):
    """A second switch whose dialplan lacks ivr-inbound and whose tone zone differs."""
    conf = tmp_path / "asterisk"
    shutil.copytree(REPO / "asterisk", conf)
    (conf / "ivr-inbound.conf").write_text("; removed on purpose\n")
    globals_conf = conf / "ivr-globals.conf"
    globals_conf.write_text(globals_conf.read_text().replace("IVR_TONEZONE = cn", "IVR_TONEZONE = us"))
    sw = EmbeddedSwitch(f"pytest-{os.getpid()}-broken", ports=Ports.free(), config_dir=conf,
                        progress=lambda _l: None)
    sw.up()
    yield sw
    sw.down()
    shutil.rmtree(sw.home, ignore_errors=True)


async def test_doctor_names_each_problem_of_a_broken_switch(broken_switch, controller_config):
    config = with_ami(controller_config(), port=broken_switch.ports.ami,
                      secret=broken_switch.secrets().controller)
    config = replace(config, agi=replace(config.agi, port=broken_switch.ports.agi))
    checks = by_name(await run_doctor(config, timeout=10))
    assert checks["AMI login"].ok and checks["AMI privileges"].ok
    assert not checks["ivr-inbound context"].ok
    assert "#include ivr-inbound.conf" in checks["ivr-inbound context"].detail
    assert not checks["tone zone"].ok and "IVR_TONEZONE=us" in checks["tone zone"].detail
    assert checks["FastAGI reachable"].ok
