"""Many switches on one PostgreSQL, any node answers the API (issue 17), on two real
embedded switches with two ``ivr run`` processes each (real processes: SIGKILL is real).

Switch A (the session's switch, ``[cluster] switch = "sw-a"``: nodes a1, a2) and switch B
(``switch_b``, systemname ``swb``: nodes b1, b2) record into one PostgreSQL. A call on each
switch is hunted to an agent (``ivr-agents``) and answered; then:

- every node's API (``/api/calls``, ``/api/dashboard``) lists both calls with the right
  ``switch``, and ``ivr report`` shows both switches;
- a hold asked of switch A's standby (a2) is carried out by A's leader (a1): the caller
  hears a reminder; a hold asked of a2 for switch B's call is carried out by B's leader;
- SIGKILL a1: a2 takes over switch A, while switch B's held caller hears every reminder on
  time from b1 (still the leader, same token), is never dropped, and is taken off hold by a
  request to b2.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import REPO
from tests.integration.amitools import AmiRecorder, ts
from tests.integration.conftest import ARTIFACTS
from tests.integration.test_cluster import Node, getvar, pg, set_agi  # noqa: F401 - pg: fixture

pytestmark = pytest.mark.integration
TOKEN = "many-switches-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INTERVAL = 4.0  # s between hold reminders
TOLERANCE = 1.0  # s: the "on time within 1 s"


class SwitchNode(Node):
    """A node of a named switch, with the API token, its advertised address and short
    hold reminders."""

    def __init__(self, name: str, switch: Any, switch_name: str, pg_url: str, tmp: Path) -> None:
        super().__init__(name, switch, pg_url, tmp)
        self.switch_name = switch_name
        messages = switch.embedded.home / "messages" / f"{tmp.name}-{name}"
        text = self.config.read_text().replace(f'switch = "{tmp.name[:40]}"', f'switch = "{switch_name}"')
        # Switch A's nodes say where their API is; B's leave it to the default (http host:port).
        advertise = f'advertise = "http://127.0.0.1:{self.http_port}"\n' if switch_name == "sw-a" else ""
        self.config.write_text(text + advertise + "\n"
                               f"[hold]\nreminder_interval = {INTERVAL}\nchoices_after = 120\nannounce = false\n"
                               f'messages_dir = "{messages}"\n')

    def start(self) -> SwitchNode:
        env = {**os.environ, "IVR_AMI_SECRET": self.secret, "IVR_AGI_KEY": self.agi_key, "IVR_HTTP_TOKEN": TOKEN,
               "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ivr", "run", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def api(self, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with aiohttp.ClientSession() as s, s.request(
                method, self.url + path, headers=AUTH, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return r.status, await r.json(), dict(r.headers)


async def start_pair(first: SwitchNode, second: SwitchNode, ami: AmiRecorder) -> str:
    """first: the leader, second: the standby; IVR_AGI lists both; returns the old IVR_AGI."""
    first.start()
    await first.wait_role("leader")
    second.start()
    await second.wait_role("standby")
    old = await getvar(ami, "IVR_AGI")
    await set_agi(ami, f"agi://127.0.0.1:{first.agi_port} agi://127.0.0.1:{second.agi_port}")
    return old


async def answered_call(ami: AmiRecorder) -> dict[str, Any]:
    """A caller hunted to one agent who answers after a ring; its BridgeEnter (the caller's
    ;1 half) once bridged with the agent."""
    await ami.add_dialplan("test-caller", "sx", ["Answer()", "Wait(120)", "Hangup()"])
    await ami.add_dialplan("test-agent", "sa", ["Ringing()", "Wait(1)", "Answer()", "Wait(120)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/sx@test-caller", "ivr-agents", "s", variables={
        "IVR_AGENTS": "7001=Local/sa@test-agent", "IVR_AGENT_TIMEOUT": "30", "IVR_FALLBACK_QUEUE": "no-such-queue",
        "IVR_LANGUAGE": "en-US"}, timeout_ms=5000)
    caller = lambda e: e.get("Channel", "").startswith("Local/sx@test-caller") and e["Channel"].endswith(";1")
    [bridged] = await ami.wait_for(lambda e: e.event == "BridgeEnter" and caller(e), timeout=30, since=since)
    return dict(bridged)


def hold_events(ami: AmiRecorder, uid: str, state: str, since: int = 0) -> list[Any]:
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                    and e.get("Uniqueid") == uid and e.get("State") == state, since)


async def wait_hold(ami: AmiRecorder, uid: str, state: str, timeout: float, count: int = 1,
                    since: int = 0) -> list[Any]:
    return await ami.wait_for(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrHold"
                              and e.get("Uniqueid") == uid and e.get("State") == state,
                              timeout=timeout, count=count, since=since)


async def listed_everywhere(nodes: list[SwitchNode], want: dict[str, str], timeout: float = 15.0) -> None:
    """Every node's /api/calls and /api/dashboard list each call in ``want`` (call id ->
    switch) with its switch (polled, bounded: the records are written as the calls go)."""
    end = time.monotonic() + timeout
    for node in nodes:
        while True:
            _, calls, _ = await node.api("GET", "/api/calls")
            _, snap, _ = await node.api("GET", "/api/dashboard")
            seen = {c["call_id"]: c["switch"] for c in calls.get("calls", [])}
            live = {c["call_id"]: c["switch"] for c in snap.get("live", [])}
            if all(seen.get(k) == v and live.get(k) == v for k, v in want.items()):
                assert snap["switch"] == node.switch_name and {"sw-a", "sw-b"} <= set(snap["switches"])
                break
            assert time.monotonic() < end, f"node {node.name}: calls {seen}, live {live}, want {want}"
            await asyncio.sleep(0.2)  # poll: the nodes' API, bounded by end
        _, only_b, _ = await node.api("GET", "/api/calls?switch=sw-b")
        assert {c["switch"] for c in only_b["calls"]} == {"sw-b"}


async def dashboard_shows_both(node: SwitchNode, want: dict[str, str], profile: Path) -> None:
    """The dashboard page of ``node`` in a real headless browser: each call's row with its
    switch, and the switch chooser listing both switches."""
    from playwright.async_api import async_playwright

    from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_FLAGS

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (tests/run installs it)", pytrace=False)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(f"{node.url}/dashboard?token={TOKEN}")
            for call_id, switch_name in want.items():
                row = page.locator(f'#live tr[data-call="{call_id}"][data-switch="{switch_name}"]')
                await row.wait_for(timeout=10_000)
                assert (await row.locator("td").all_inner_texts())[0] == switch_name
            options = await page.locator("#switch option").all_inner_texts()
            assert options[0] == "every switch" and f"{node.switch_name} (this node)" in options, options
            assert {"sw-a", "sw-b"} - {node.switch_name} <= set(options)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-switches.png"), full_page=True)
        finally:
            await browser.close()


def report(pg_url: str, *extra: str) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    out = subprocess.run([sys.executable, "-m", "ivr", "report", "--database", pg_url, "--timezone", "UTC",
                          "--from", today, "--to", today, "--format", "json", *extra],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return dict(json.loads(out.stdout))


async def test_two_switches_one_database_any_node_answers(
        switch: Any, switch_b: Any, ami: AmiRecorder, ami_b: AmiRecorder, pg: str, tmp_path: Path) -> None:  # noqa: F811
    a1, a2 = SwitchNode("a1", switch, "sw-a", pg, tmp_path), SwitchNode("a2", switch, "sw-a", pg, tmp_path)
    b1, b2 = SwitchNode("b1", switch_b, "sw-b", pg, tmp_path), SwitchNode("b2", switch_b, "sw-b", pg, tmp_path)
    nodes = [a1, a2, b1, b2]
    old_a = old_b = None
    try:
        old_a = await start_pair(a1, a2, ami)
        old_b = await start_pair(b1, b2, ami_b)
        for node in nodes:  # the switch in /healthz and the metrics
            health = await node.health()
            assert health["switch"] == node.switch_name and health["cluster"]["switch"] == node.switch_name
            assert health["forwarding"]["advertise"] == node.url  # given (A) or http host:port (B)
            assert f'ivr_switch_info{{node="{node.name}",switch="{node.switch_name}"}} 1.0' \
                in await node.metric("ivr_switch_info")
        call_a, call_b = await answered_call(ami), await answered_call(ami_b)
        id_a, id_b = call_a["Linkedid"], call_b["Linkedid"]
        assert id_a != id_b and id_b.startswith("swb-")
        await listed_everywhere(nodes, {id_a: "sw-a", id_b: "sw-b"})
        await dashboard_shows_both(a2, {id_a: "sw-a", id_b: "sw-b"}, tmp_path / "chromium-profile")
        every = report(pg)
        assert {s["switch"] for s in every["switches"]} >= {"sw-a", "sw-b"}
        assert {s["switch"] for s in report(pg, "--switch", "sw-b")["switches"]} == {"sw-b"}

        # A hold asked of switch A's standby: carried out by A's leader, a reminder heard.
        since_a = len(ami.events)
        asked = time.monotonic()
        status, body, headers = await a2.api("POST", f"/api/calls/{id_a}/hold")
        print(f"\nhold asked of the standby, answered by the leader in {time.monotonic() - asked:.3f} s")
        assert status == 200 and headers.get("X-Ivr-Answered-By") == "a1", (status, body)
        [reminder] = await wait_hold(ami, call_a["Uniqueid"], "reminder", INTERVAL + 5, since=since_a)
        [start] = hold_events(ami, call_a["Uniqueid"], "start", since_a)
        assert abs(ts(reminder) - ts(start) - INTERVAL) <= TOLERANCE
        stream = await ami.wait_for(lambda e: e.event == "AGIExecStart" and e.get("Channel") == call_a["Channel"]
                                    and "hold_reminder" in e.get("Command", ""), timeout=5, since=since_a)
        assert stream
        assert (await a2.health())["forwarding"]["forwarded"] >= 1

        # A hold asked of switch A's standby for switch B's call: B's leader carries it out.
        since_b = len(ami_b.events)
        status, body, headers = await a2.api("POST", f"/api/calls/{id_b}/hold")
        assert status == 200 and headers.get("X-Ivr-Answered-By") == "b1", (status, body)
        [start_b] = await wait_hold(ami_b, call_b["Uniqueid"], "start", 5, since=since_b)
        await wait_hold(ami_b, call_b["Uniqueid"], "reminder", INTERVAL + 5, since=since_b)
        assert not hold_events(ami, call_b["Uniqueid"], "start")  # nothing of B's on switch A

        # Switch A's call ends; SIGKILL A's leader: A2 takes over, switch B goes on undisturbed.
        await ami.action({"Action": "Hangup", "Channel": call_a["Channel"]})
        await wait_hold(ami, call_a["Uniqueid"], "abandon", 5, since=since_a)
        end = time.monotonic() + 10
        while await ami.channels():  # the leader let the agent go (its keeper hung up) before it dies
            assert time.monotonic() < end, [c["Channel"] for c in await ami.channels()]
            await asyncio.sleep(0.2)  # poll: Asterisk's own state, bounded by end
        token_b = (await b1.health())["cluster"]["token"]
        a1.kill()
        await a2.wait_role("leader", timeout=5)
        await wait_hold(ami_b, call_b["Uniqueid"], "reminder", 2 * INTERVAL + 5, count=3, since=since_b)
        got = [round(ts(e) - ts(start_b), 3) for e in hold_events(ami_b, call_b["Uniqueid"], "reminder", since_b)]
        print(f"\nswitch B reminders across switch A's leader kill (s after hold): {got}")
        for n, at in enumerate(got[:3], 1):
            assert abs(at - n * INTERVAL) <= TOLERANCE, got
        hb = await b1.health()
        assert (hb["role"], hb["cluster"]["token"], hb["cluster"]["takeovers"]) == ("leader", token_b, 1)
        b_caller = call_b["Channel"]
        assert not ami_b.find(lambda e: e.event == "Hangup" and e.get("Channel") == b_caller, since_b)

        # Taken off hold through B's standby; the caller is back with the agent.
        since_b = len(ami_b.events)
        status, body, headers = await b2.api("POST", f"/api/calls/{id_b}/resume")
        assert status == 200 and headers.get("X-Ivr-Answered-By") == "b1", (status, body)
        await ami_b.wait_for(lambda e: e.event == "BridgeEnter" and e.get("Channel") == b_caller,
                             timeout=15, since=since_b)
        await ami_b.action({"Action": "Hangup", "Channel": b_caller})
        await ami_b.wait_for(lambda e: e.event == "Hangup" and e.get("Channel") == b_caller, timeout=10)
    finally:
        if old_a is not None:
            await set_agi(ami, old_a)
        if old_b is not None:
            await set_agi(ami_b, old_b)
        for node in reversed(nodes):
            node.stop()
