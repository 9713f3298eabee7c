"""Issue 13 on the real switch: FastAGI impostors are refused, and idle-connection floods
and slowloris on both servers (HTTP API, FastAGI) under a low fd limit never keep the
switch's calls from being answered within 1 s.

Timings come from Asterisk's own AMI timestamps: the ``Newexten`` that starts ``AGI()`` on
the inbound leg, and the ``AGIExecEnd`` of ``ANSWER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.agi.testing import environment, play_switch, wire
from tests.integration.amitools import AmiRecorder, ts, until

ANSWER_WITHIN = 1.0  # s from AGI() starting on the switch to ANSWER done
FD_LIMIT = 128  # the reproduction: 140 idle HTTP keep-alive connections under this


def agi_started(uniqueid: str):
    return lambda e: (e.event == "Newexten" and e.get("Uniqueid") == uniqueid
                      and e.get("Application") == "AGI")


def answered(uniqueid: str):
    return lambda e: (e.event == "AGIExecEnd" and e.get("Uniqueid") == uniqueid
                      and e.get("Command") == "ANSWER")


async def call_answer_delay(ami: AmiRecorder, exten: str) -> float:
    """Place one inbound call (a Local caller that waits); seconds from the switch starting
    AGI() to the controller's ANSWER completing, by Asterisk's timestamps."""
    await ami.add_dialplan("test-caller", exten, ["Answer()", "Wait(20)", "Hangup()"])
    since = len(ami.events)
    await ami.originate(f"Local/{exten}@test-caller", "ivr-inbound", "s")
    [new] = await ami.wait_for(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith(
        f"Local/{exten}@test-caller-") and e.get("Channel", "").endswith(";1"), timeout=10, since=since)
    uid = new["Uniqueid"]
    [start] = await ami.wait_for(agi_started(uid), timeout=10, since=since)
    [done] = await ami.wait_for(answered(uid), timeout=10, since=since)
    assert done["Result"] == "Success", done
    await ami.action({"Action": "Hangup", "Channel": new["Channel"]})
    await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Uniqueid") == uid, timeout=10, since=since)
    return ts(done) - ts(start)


async def read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


async def test_impostors_are_refused_and_calls_go_on(switch, ami, make_controller):
    """A local process posing as Asterisk: without the switch's key it gets no command and
    is disconnected; with the key but a malformed header, too. The real switch's calls
    are answered as before."""
    ctl = await make_controller()
    port = ctl.agi.port
    # 1. The impostor: a full, well-formed environment, but no key.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire(environment("transfer-target", args=("ivrx1-1",), port=port)))
    await writer.drain()
    assert await read_all(reader) == b""  # not one command (no CONFIRM, no SET VARIABLE), closed
    writer.close()
    # 2. A wrong key.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    commands = await asyncio.wait_for(play_switch(reader, writer, environment("inbound", "x" * 43)), 5)
    assert commands == []
    # 3. The right key, but a header no Asterisk writes.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"agi_network: yes\nagi_network_script: inbound?ivr_key={switch.agi_key}\n"
                 "agi_channel: PJSIP/x\n\n".encode())
    await writer.drain()
    assert await read_all(reader) == b""
    writer.close()
    assert ctl.agi.refused == {"bad key": 2, "bad header": 1}
    assert ctl.metrics.value("ivr_agi_refused_total", {"reason": "bad key"}) == 2
    # The real switch proves itself: its call is answered.
    delay = await call_answer_delay(ami, "impostor-after")
    assert delay < ANSWER_WITHIN


class Flood:
    """Idle and slowloris connections against one port, kept up until stopped: idle
    ones connect once (HTTP ones after one keep-alive request) and stay silent; slowloris
    ones send a byte every ``drip`` s and reconnect ``drip`` s after being closed."""

    def __init__(self, port: int, *, idle: int, slow: int, first: bytes, drip: float = 0.1,
                 http: bool = False) -> None:
        self.port, self.idle, self.slow, self.first, self.drip, self.http = port, idle, slow, first, drip, http
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.opened = 0
        self.closed_by_server = 0

    async def start(self) -> None:
        for _ in range(self.idle):
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                self.opened += 1
                self.writers.append(writer)
                if self.http:  # one request, then an idle keep-alive connection
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                    with contextlib.suppress(OSError, TimeoutError):
                        async with asyncio.timeout(2):
                            await reader.readuntil(b"\r\n\r\n")
        self.tasks = [asyncio.ensure_future(self._slowloris()) for _ in range(self.slow)]

    async def _slowloris(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(self.drip)  # pacing: the slowloris drip
                continue
            self.opened += 1
            try:
                for byte in self.first * 100:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(self.drip)  # pacing: the slowloris drip
                    if reader.at_eof():
                        break
            except OSError:
                pass
            finally:
                self.closed_by_server += 1
                writer.close()
            await asyncio.sleep(self.drip)  # pacing: the slowloris drip

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()


def _spawn_with_low_fd_limit(config_path: str, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``ivr run`` in a child whose RLIMIT_NOFILE soft limit is :data:`FD_LIMIT` (set by the
    child itself before the controller starts; no preexec_fn)."""
    code = ("import resource, runpy, sys\n"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            f"sys.argv = ['ivr', 'run', '--config', {config_path!r}]\n"
            "runpy.run_module('ivr', run_name='__main__')\n")
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", code], stdout=log_file, stderr=subprocess.STDOUT, env=env)


async def test_floods_under_a_low_fd_limit_never_keep_calls_waiting(switch, ami, controller_config, tmp_path):
    """The issue's reproduction and more: the controller runs with RLIMIT_NOFILE 128; 140
    idle HTTP keep-alive connections, 20 HTTP slowloris, 60 idle FastAGI connections and
    20 FastAGI slowloris hold on while three calls come in: each is answered within 1 s;
    the log does not flood; the HTTP API still answers."""
    if switch.embedded is None:
        pytest.skip("needs the embedded switch's controller secret")
    config = controller_config()
    env = {**os.environ, "IVR_AMI_SECRET": switch.embedded.secrets().controller, "IVR_AGI_KEY": switch.agi_key}
    log_path = tmp_path / "ivr.log"
    proc = _spawn_with_low_fd_limit(str(config.path), log_path, env)
    healthz = f"http://127.0.0.1:{config.http.port}/healthz"
    floods: list[Flood] = []
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                assert proc.poll() is None, f"ivr run exited early:\n{log_path.read_text()}"
                try:
                    async with asyncio.timeout(2), http.get(healthz) as resp:
                        return (await resp.json())["status"] == "ok"
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await until(healthy, 20, "ivr run healthy")
            floods = [
                Flood(config.http.port, idle=140, slow=20, first=b"GET /healthz HTTP/1.1\r\nHost: x\r\n", http=True),
                Flood(config.agi.port, idle=60, slow=20, first=wire(environment("inbound"))[:200]),
            ]
            for flood in floods:
                await flood.start()
            delays = [await call_answer_delay(ami, f"flood-{i}") for i in range(3)]
            print(f"ANSWER after AGI() start under the flood: {[round(d, 3) for d in delays]} s; "
                  f"connections opened: HTTP {floods[0].opened}, FastAGI {floods[1].opened}")
            assert max(delays) < ANSWER_WITHIN, delays
            assert await healthy(), "the HTTP API answers under the flood (an idle connection made room)"
            assert proc.poll() is None
    finally:
        for flood in floods:
            await flood.stop()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    lines = log_path.read_text().splitlines()
    events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
    counts: dict[str, Any] = {e: events.count(e) for e in set(events)}
    print(f"log: {len(lines)} lines; {sorted(counts.items(), key=lambda kv: -kv[1])[:8]}")
    assert "net.caps_lowered" in counts  # 128 fds: both caps were fitted under the limit
    assert len(lines) < 200, f"the log flooded: {len(lines)} lines"
    assert not any("Traceback" in line for line in lines), "\n".join(lines[-40:])

