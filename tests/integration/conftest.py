"""One real Asterisk per test session, shared by the integration tests.

By default the embedded switch (Debian sid chroot, `ivr asterisk`) is started on free
loopback ports under its own instance name, and stopped at the end. With IVR_EXTERNAL=1
the tests drive an Asterisk that is already running (a container, say), reached with
IVR_AMI_HOST / IVR_AMI_PORT and, for the tests' own all-classes AMI connection,
IVR_AMI_ADMIN_USERNAME / IVR_AMI_ADMIN_SECRET (as `ivr asterisk env --admin` prints them;
default: IVR_AMI_USERNAME / IVR_AMI_SECRET, which the controller uses); that switch's
IVR_AGI global must point at IVR_AGI_HOST:IVR_AGI_PORT, where the tests' controller
listens.

If the switch cannot start, every integration test fails with the reason: they are
never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ivr.switch.embedded import ADMIN_USER, EmbeddedSwitch, reap_stale_test_instances
from ivr.switch.host import Ports
from tests import REPO
from tests.integration.amitools import AmiRecorder

ARTIFACTS = REPO / "test-artifacts"


@dataclass
class Switch:
    ami_host: str
    ami_port: int
    username: str
    secret: str
    agi_host: str
    agi_port: int
    sip_port: int
    embedded: EmbeddedSwitch | None
    agi_key: str = ""  # the FastAGI key the switch's dialplan passes (?ivr_key=...)

    def cli(self, command: str) -> str:
        if self.embedded is None:
            raise RuntimeError("CLI access needs the embedded switch")
        return self.embedded.cli(command)


# Side by side: `bash tests/run` runs this directory with `pytest -n 2 --dist loadgroup`,
# each worker process with its own embedded switch (instance pytest-<pid>, free ports, its
# own RTP range). A file's tests stay together on one worker (module fixtures, one
# scenario after the other); the files that run SIPp or a benchmark's fixed RTP ports share
# one worker, because SIPp's RTP echo port defaults to 6000 in every scenario. The files
# that load the CPU for seconds (240 hostile connections, a wheel built and installed,
# headless Chromium) are marked `solo`: tests/run runs them first, alone, because beside
# them a neighbour's timing moved (a 1 s answer bound missed by 4 ms in one run).
SIP_FILES = frozenset({
    "test_bench_sip", "test_hold", "test_hostile_callers", "test_rings", "test_sip_phone",
    "test_sip_rules", "test_sip_unclear", "test_transfer_policy",
})
# The SIP files that time what a caller hears on its captured RTP to 60 ms also run alone:
# beside another worker, test_sip_rules' agent number and hold prompts were heard 0.07-0.17 s
# off in two of three side-by-side runs.
SOLO_FILES = frozenset({"test_bad_input_agi", "test_dashboard", "test_package", "test_sip_rules",
                        "test_sip_unclear"})


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups and -m selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        path = Path(str(item.path))
        if path.parent != here:
            continue
        if path.stem in SOLO_FILES:
            item.add_marker(pytest.mark.solo)
        if grouped:
            item.add_marker(pytest.mark.xdist_group("sip" if path.stem in SIP_FILES else path.stem))


def _build_prompts() -> Path:
    out = REPO / "prompts" / "build"
    subprocess.run([sys.executable, "-m", "ivr", "prompts", "build", "--out", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def switch() -> Iterator[Switch]:
    if os.environ.get("IVR_EXTERNAL") == "1":
        env = os.environ
        yield Switch(
            ami_host=env.get("IVR_AMI_HOST", "127.0.0.1"), ami_port=int(env.get("IVR_AMI_PORT", "5038")),
            username=env.get("IVR_AMI_ADMIN_USERNAME") or env["IVR_AMI_USERNAME"],
            secret=env.get("IVR_AMI_ADMIN_SECRET") or env["IVR_AMI_SECRET"],
            agi_host=env.get("IVR_AGI_HOST", "127.0.0.1"), agi_port=int(env.get("IVR_AGI_PORT", "4573")),
            sip_port=int(env.get("IVR_SIP_PORT", "5060")), embedded=None,
            # The external switch's ivr-agi-key.conf key: without it every AGI session is refused.
            agi_key=env.get("IVR_AGI_KEY", ""),
        )
        return
    reap_stale_test_instances()  # switches left by a killed run
    yield from _embedded(f"pytest-{os.getpid()}", "asterisk.console.log")


@pytest.fixture(scope="session")
def switch_b(switch: Switch) -> Iterator[Switch]:
    """A second embedded switch (issue 17: many switches on one database), its own instance
    on its own free ports, with its own systemname (so its call ids never equal switch
    A's); started after the first one."""
    if switch.embedded is None:
        pytest.fail("a second switch needs the embedded Asterisk (IVR_EXTERNAL=1 gives one only)", pytrace=False)
    yield from _embedded(f"pytest-{os.getpid()}-b", "asterisk-b.console.log", system_name="swb")


def _embedded(name: str, log_name: str, system_name: str = "") -> Iterator[Switch]:
    built = _build_prompts()
    embedded = EmbeddedSwitch(name, ports=Ports.free(), prompts_build=built, progress=lambda _l: None,
                              system_name=system_name)
    try:
        embedded.up()
    except Exception as exc:  # noqa: BLE001 - reported, then the tests fail
        pytest.fail(f"the embedded Asterisk did not start: {exc}", pytrace=False)
    # Test audio the callers play from their side of a Local channel.
    from ivr.prompts import make_test_audio

    make_test_audio(embedded.rootfs / "usr/share/asterisk/sounds/ivr-test")
    try:
        yield Switch(
            ami_host="127.0.0.1", ami_port=embedded.ports.ami, username=ADMIN_USER,
            secret=embedded.secrets().admin, agi_host="127.0.0.1", agi_port=embedded.ports.agi,
            sip_port=embedded.ports.sip, embedded=embedded, agi_key=embedded.secrets().agi_key,
        )
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        if embedded.log_file.exists():
            shutil.copy(embedded.log_file, ARTIFACTS / log_name)
        embedded.down()
        shutil.rmtree(embedded.home, ignore_errors=True)


@pytest.fixture
async def ami(switch: Switch) -> AsyncIterator[AmiRecorder]:
    """An admin AMI connection recording every event of the test."""
    async with recording(switch) as rec:
        yield rec


@pytest.fixture
async def ami_b(switch_b: Switch) -> AsyncIterator[AmiRecorder]:
    """The same on the second switch."""
    async with recording(switch_b) as rec:
        yield rec


@contextlib.asynccontextmanager
async def recording(sw: Switch) -> AsyncIterator[AmiRecorder]:
    rec = await AmiRecorder(sw.ami_host, sw.ami_port, sw.username, sw.secret).connect()
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture(autouse=True)
async def no_leaked_channels(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After each integration test no channel is left on the switch (testsuite style)."""
    yield
    for name in ("switch", "switch_b"):
        if name in request.fixturenames:
            await _no_channels_left(request.getfixturevalue(name))


async def _no_channels_left(sw: Switch) -> None:
    rec = await AmiRecorder(sw.ami_host, sw.ami_port, sw.username, sw.secret).connect()
    try:
        import asyncio
        import time

        deadline = time.monotonic() + 8.0
        left = await rec.channels()
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # poll: Asterisk's own state, bounded
            left = await rec.channels()
        for ch in left:
            await rec.action({"Action": "Hangup", "Channel": ch["Channel"]})
        assert not left, f"channels left on the switch: {[c['Channel'] for c in left]}"
    finally:
        rec.close()


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def controller_config(switch: Switch, tmp_path: Path):
    """Build a controller Config for this switch from extra TOML text.

    ``controller_config("[rings]\\nreroute = true\\n")`` returns a loaded Config whose
    [ami] and [agi] point at the test switch (AMI user ``ivr`` with its generated secret
    on the embedded switch; the admin user on an external one).
    """
    from ivr.config import load_config

    def make(extra_toml: str = "") -> object:
        if switch.embedded is not None:
            user, secret = "ivr", switch.embedded.secrets().controller
        else:  # the controller's own user when given, else the admin one
            user = os.environ.get("IVR_AMI_USERNAME") or switch.username
            secret = os.environ.get("IVR_AMI_SECRET") or switch.secret
        text = (
            f"[ami]\nhost = \"{switch.ami_host}\"\nport = {switch.ami_port}\nusername = \"{user}\"\n\n"
            f"[agi]\nhost = \"127.0.0.1\"\nport = {switch.agi_port}\n\n"
            f"[database]\nurl = \"sqlite:///{tmp_path / 'ivr.db'}\"\n\n"
            + ("" if "[http]" in extra_toml else f"[http]\nport = {_free_tcp_port()}\n\n")
            + extra_toml
        )
        path = tmp_path / "ivr.toml"
        path.write_text(text)
        return load_config(path, env={"IVR_AMI_SECRET": secret, "IVR_AGI_KEY": switch.agi_key})

    return make


@pytest.fixture
async def make_controller(controller_config, switch):
    """Start controllers on the test switch's FastAGI port; all are stopped afterwards,
    and the dialplan globals they published are put back as they were, so one test's
    agents never answer another test's calls.

    ``ctl = await make_controller("extra toml", now=lambda: datetime(...))``
    """
    from ivr.controller import Controller

    started: list[Controller] = []
    rec = await AmiRecorder(switch.ami_host, switch.ami_port, switch.username, switch.secret).connect()
    published = ("IVR_AGENTS", "IVR_AGENT_TIMEOUT", "IVR_REROUTE_TARGET")
    before: dict[str, str] = {}
    try:
        for name in published:
            reply = await rec.action({"Action": "Getvar", "Variable": name})
            before[name] = str(reply.get("Value") or "")
    except BaseException:
        rec.close()
        raise

    async def make(extra_toml: str = "", **kwargs: Any) -> Controller:
        ctl = Controller(controller_config(extra_toml), **kwargs)
        await ctl.start()
        started.append(ctl)
        await ctl.ready(15)  # AMI logged in, channels resynced, dialplan globals published
        return ctl

    try:
        yield make
        for ctl in started:
            await ctl.stop()
            leaked = [t for t in ctl.agi.calls if not t.done()]
            assert not leaked, f"call tasks still running after stop: {leaked}"
    finally:
        try:
            for name, value in before.items():
                await rec.action({"Action": "Setvar", "Variable": name, "Value": value})
        finally:
            rec.close()
