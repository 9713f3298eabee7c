"""`ivr demo` as an admin runs it (issue 14.4): a subprocess on its own embedded switch
instance. One round shows every rule's timeline lines within three minutes; SIGINT or
SIGTERM mid-round ends it within 5 s with exit code 0, nothing of it left running (no
process in its session, no thread keeping it alive: the process is gone) and none of its
calls left on the switch, which keeps running as documented.

The demo starts its own switch, so these tests do not use the shared ``switch`` fixture
and are skipped against an external Asterisk.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.switch.embedded import ADMIN_USER, EmbeddedSwitch, reap_stale_test_instances
from tests import REPO
from tests.integration.amitools import AmiRecorder, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("IVR_EXTERNAL") == "1", reason="the demo runs its own embedded switch"),
]

ROUND_LIMIT = 180.0  # the issue: one round within three minutes
STOP_LIMIT = 5.0  # Ctrl-C / SIGTERM to exit

# Each rule's lines in one round (rule column, caller, what happened).
EXPECTED = {
    "R1 warning alarm": r"R1 ring\s+caller 13800001\s+warning ring alarm: 3 rings",
    "R1 critical alarm": r"R1 ring\s+caller 13800001\s+critical ring alarm: 6 rings",
    "R1 apology": r"R1 ring\s+caller 13800001\s+the caller hears the apology",
    "R2 greeting": r"R2 greet\s+caller 13800002\s+greeting of the day: ",
    "R3 released": r"R3 silent\s+caller 13800003\s+released \(silent\)",
    "R4 reminder": r"R4 hold\s+caller 13800004\s+reminder 1 \(30 s\)",
    "R4 choices": r"R4 hold\s+caller 13800004\s+choices .*\(60 s\)",
    "R4 resumed": r"R4 hold\s+caller 13800004\s+resumed",
    "R5 confirmed": r"R5 xfer\s+caller 13800005\s+to 1003: completed",
    "R5 declined": r"R5 xfer\s+caller 13800006\s+to 1004: refused",
    "R5 returned": r"R5 xfer\s+caller 13800006\s+caller talking with agent 1001",
}
TIMELINE = re.compile(r"^\+\d\d:\d\d\.\d  ")


@dataclass
class DemoRun:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def instance() -> Iterator[EmbeddedSwitch]:
    """The demo's own instance (free ports), stopped and removed after the module."""
    reap_stale_test_instances()
    switch = EmbeddedSwitch(f"pytest-{os.getpid()}-demo", progress=lambda _l: None)
    try:
        yield switch
    finally:
        switch.down()
        import shutil

        shutil.rmtree(switch.home, ignore_errors=True)


async def start_demo(switch: EmbeddedSwitch, *args: str) -> DemoRun:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "demo", "--instance", switch.name, "--http-port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
        start_new_session=True,  # its own session: whatever it leaves behind is findable
    )
    run = DemoRun(proc)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            run.lines.append(raw.decode(errors="replace").rstrip("\n"))

    run.reader = asyncio.ensure_future(read())
    return run


def session_members(sid: int) -> list[str]:
    """Processes still in session ``sid`` (the demo's own, as started above)."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            left.append(f"{stat.parent.name}: {(stat.parent / 'cmdline').read_bytes()[:80]!r}")
    return left


async def switch_channels(switch: EmbeddedSwitch) -> list[str]:
    rec = await AmiRecorder("127.0.0.1", switch.ports.ami, ADMIN_USER, switch.secrets().admin).connect()
    try:
        return [c["Channel"] for c in await rec.channels()]
    finally:
        rec.close()


@pytest.fixture
async def demo_runs() -> AsyncIterator[list[DemoRun]]:
    runs: list[DemoRun] = []
    yield runs
    for run in runs:  # a failed test never leaves a demo running
        if run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        if run.reader is not None:
            run.reader.cancel()


async def test_one_round_shows_every_rule_within_three_minutes(instance: EmbeddedSwitch,
                                                              demo_runs: list[DemoRun]) -> None:
    started = time.monotonic()
    run = await start_demo(instance, "--rounds", "1")
    demo_runs.append(run)
    try:
        code = await asyncio.wait_for(run.proc.wait(), ROUND_LIMIT + 60)  # + first build/start
    except TimeoutError:
        pytest.fail("ivr demo --rounds 1 did not end:\n" + run.text)
    assert run.reader is not None
    await asyncio.wait_for(run.reader, 5)
    took = time.monotonic() - started
    assert code == 0, run.text
    # each one a timeline line: +MM:SS.s, rule, caller, what happened
    missing = [name for name, pattern in EXPECTED.items()
               if not re.search(TIMELINE.pattern + pattern, run.text, flags=re.MULTILINE)]
    assert not missing, f"no timeline line for {missing}:\n{run.text}"
    # the round itself (first call to last hang-up) fits in three minutes
    [done] = [line for line in run.lines if re.match(r"-- round 1 done in \d+ s", line)]
    assert int(done.split()[-2]) <= ROUND_LIMIT, done
    print(f"one demo round: {done}; whole command {took:.0f} s")
    assert not session_members(run.proc.pid)
    await until(lambda: _no_channels(instance), 5, "no call of the demo left on the switch")
    assert instance.pid() is not None, "the embedded switch keeps running, as documented"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_signal_mid_round_ends_the_demo_within_5_s(instance: EmbeddedSwitch, demo_runs: list[DemoRun],
                                                         sig: signal.Signals) -> None:
    run = await start_demo(instance)
    demo_runs.append(run)
    # mid-round: calls on hold and in transfer, others ringing
    await until(lambda: "on hold (via api)" in run.text and run.proc.returncode is None, 90,
                "the demo's round under way:\n" + run.text)
    assert await switch_channels(instance), "calls are on the switch when the signal comes"
    sent = time.monotonic()
    run.proc.send_signal(sig)
    try:
        code = await asyncio.wait_for(run.proc.wait(), STOP_LIMIT)
    except TimeoutError:
        pytest.fail(f"ivr demo still running {STOP_LIMIT} s after {sig.name}:\n{run.text}")
    took = time.monotonic() - sent
    assert run.reader is not None
    await asyncio.wait_for(run.reader, 5)
    print(f"{sig.name}: exit code {code} after {took:.2f} s")
    assert code == 0, run.text
    assert "ivr demo: stopped" in run.text
    assert "leaving without waiting for threads" not in run.text, run.text
    assert not session_members(run.proc.pid), "processes of the demo outlived it"
    # its calls are hung up (the switch may take a moment to tear Local channels down)
    await until(lambda: _no_channels(instance), 5, "the demo's calls hung up")
    assert instance.pid() is not None, "the embedded switch keeps running, as documented"


async def _no_channels(switch: EmbeddedSwitch) -> bool:
    return await switch_channels(switch) == []
