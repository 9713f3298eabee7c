"""Graceful shutdown of the real process (issue 9): ``ivr run`` gets SIGTERM while it greets
a caller. It stops taking calls at once (a new call goes to the fallback queue), gives the
call in progress its grace period and then hands it to the fallback, writes the records,
and exits with code 0 within a bound."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.amitools import ts, until

pytestmark = pytest.mark.integration

EXIT_BOUND = 10.0  # s from SIGTERM to exit (grace 5 s + closing)


def _fallback(uniqueid: str, reason: str):
    return lambda e: (e.event == "UserEvent" and e.get("UserEvent") == "IvrFallback"
                      and e.get("Uniqueid") == uniqueid and e.get("Reason") == reason)


async def _caller(ami, exten: str, steps: list[str]) -> str:
    """Originate a Local caller into ivr-inbound; the Uniqueid of its ;1 half."""
    await ami.add_dialplan("test-caller", exten, steps)
    since = len(ami.events)
    await ami.originate(f"Local/{exten}@test-caller", "ivr-inbound", "s")
    new = (await ami.wait_for(lambda e: e.event == "Newchannel" and e.get("Channel", "").startswith(
        f"Local/{exten}@") and e.get("Channel", "").endswith(";1"), timeout=10, since=since))[0]
    return str(new["Uniqueid"])


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)


async def test_sigterm_stops_taking_calls_hands_over_flushes_and_exits(switch, ami, controller_config, tmp_path):
    if switch.embedded is None:
        pytest.skip("needs the embedded switch's controller secret")
    config = controller_config()
    env = {**os.environ, "IVR_AMI_SECRET": switch.embedded.secrets().controller, "IVR_AGI_KEY": switch.agi_key}
    log_path = tmp_path / "ivr.log"
    proc = _spawn([sys.executable, "-m", "ivr", "run", "--config", str(config.path)], log_path, env)
    healthz = f"http://127.0.0.1:{config.http.port}/healthz"
    try:
        async with aiohttp.ClientSession() as http:
            async def health() -> dict[str, Any] | None:
                assert proc.poll() is None, f"ivr run exited early:\n{log_path.read_text()}"
                try:
                    async with http.get(healthz) as resp:
                        return await resp.json()
                except aiohttp.ClientConnectionError:
                    return None

            async def healthy() -> bool:
                body = await health()
                return body is not None and body["status"] == "ok"

            await until(healthy, 20, "ivr run healthy (AMI, FastAGI, database)")

            # Call A: a silent caller, mid-greeting when SIGTERM comes.
            since = len(ami.events)
            first = await _caller(ami, "sigterm-a", ["Answer()", "Wait(40)", "Hangup()"])
            await ami.wait_for(lambda e: e.event == "AGIExecStart" and e.get("Uniqueid") == first
                               and "STREAM FILE" in e.get("Command", ""), timeout=10, since=since)
            proc.send_signal(signal.SIGTERM)
            sigterm = time.monotonic()

            async def fastagi_closed() -> bool:
                body = await health()
                return body is not None and not body["checks"]["fastagi"]["ok"]

            await until(fastagi_closed, 3, "FastAGI closed after SIGTERM")
            # Call B, placed during the shutdown: not taken, the fallback queues it.
            second = await _caller(ami, "sigterm-b", ["Answer()", "Wait(40)", "Hangup()"])
            await ami.wait_for(_fallback(second, "unreachable"), timeout=5, since=since)

        # Call A: given its grace period, then handed to the fallback, never dropped.
        handed = (await ami.wait_for(_fallback(first, "unfinished"), timeout=EXIT_BOUND, since=since))[0]
        await until(lambda: proc.poll() is not None, EXIT_BOUND - (time.monotonic() - sigterm), "exit after SIGTERM")
        exited = time.monotonic() - sigterm
        print(f"ivr run exited {exited:.2f} s after SIGTERM with code {proc.returncode}")
        assert proc.returncode == 0, log_path.read_text()
        joined = ami.find(lambda e: e.event == "QueueCallerJoin", since)
        assert {e["Uniqueid"] for e in joined} >= {first, second}
        assert not ami.find(lambda e: e.event == "Hangup" and e.get("Uniqueid") in (first, second), since)
        greeting = ami.find(lambda e: e.event == "AGIExecStart" and e.get("Uniqueid") == first, since)[0]
        assert ts(handed) - ts(greeting) >= 4.0, "the call in progress was not given its grace period"

        # The records were written out before the exit (the drain itself: unit tests).
        logs = {entry.get("event"): entry for entry in
                (json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{"))}
        assert "controller.stopped" in logs and "records.drain_incomplete" not in logs
        assert logs["records.stopped"]["complete"] is True and logs["records.stopped"]["failed"] == 0
        db = sqlite3.connect(config.database.url.removeprefix("sqlite:///"))
        try:
            kinds = [k for (k,) in db.execute("SELECT kind FROM call_events WHERE call_id = ? ORDER BY at",
                                              (first,))]
        finally:
            db.close()
        print(f"call A on record: {kinds}")
        # call.started (the switch's own start of the call, README "Controller pairs") comes first
        assert kinds and kinds[0] in ("call.started", "call.arrived") and "call.arrived" in kinds[:2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for ch in await ami.channels():
            await ami.action({"Action": "Hangup", "Channel": ch["Channel"]})
