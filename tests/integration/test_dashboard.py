"""The dashboard in a real headless browser (Debian's chromium driven by Playwright),
while the real switch rings an agent past three rings.

The whole controller runs (``make_controller``): AMI, ring monitor, records, HTTP. The
caller is ``Local/x@test-caller`` entering ``ivr-agents`` with the hunt list
``1001=Local/1001@test-agent``; the agent rings 17 s (tone zone cn: 5 s a ring, so the
fourth ring has started and the three-ring alarm is due at 15 s), answers, talks 1 s and
hangs up first. The page must show the call ringing, then the alarm, pushed by the
server-sent event stream; afterwards the record holds 4 rings and an agent-first hang-up.
A screenshot is kept in test-artifacts/dashboard.png.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from tests.integration.amitools import AmiRecorder, ts
from tests.integration.conftest import ARTIFACTS

pytestmark = pytest.mark.integration
TOKEN = "dashboard-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def api(port: int, path: str) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http, \
            http.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def test_ring_alarm_appears_on_the_dashboard(make_controller, ami: AmiRecorder, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (tests/run installs it)", pytrace=False)
    port = free_port()
    await make_controller(
        f'[http]\nport = {port}\ntoken = "{TOKEN}"\n\n'
        '[[agents]]\nnumber = "1001"\nname = "Wang Fang"\ndial = "Local/1001@test-agent"\n'
    )
    await ami.add_dialplan("test-caller", "x", ["Answer()", "Wait(40)", "Hangup()"])
    await ami.add_dialplan("test-agent", "1001", ["Ringing()", "Wait(17)", "Answer()", "Wait(1)", "Hangup()"])

    async with async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            # The page runs under the controller's Content-Security-Policy: nothing it needs is blocked.
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
            await page.goto(f"http://127.0.0.1:{port}/dashboard?token={TOKEN}")
            assert page.url == f"http://127.0.0.1:{port}/dashboard"  # the token went into a cookie
            await page.locator("#link.up").wait_for(timeout=10_000)  # the event stream is open
            assert await page.locator("#alarms li").count() == 0

            since = len(ami.events)
            await ami.originate("Local/x@test-caller", "ivr-agents", "s", variables={
                "IVR_AGENTS": "1001=Local/1001@test-agent", "IVR_AGENT_TIMEOUT": "30",
                "IVR_FALLBACK_QUEUE": "no-such-queue", "IVR_LANGUAGE": "en-US"}, timeout_ms=5000)
            (dial,) = await ami.wait_for(lambda e: e.event == "DialBegin" and "@test-agent" in e.get("DestChannel", ""),
                                         timeout=10, since=since)
            call_id = dial["Linkedid"]
            ringing = page.locator(f'#live tr[data-call="{call_id}"] .badge.ringing')
            await ringing.wait_for(timeout=5_000)
            assert "ring 1" in await ringing.inner_text()

            alarm = page.locator(f'#alarms li[data-call="{call_id}"]')
            await alarm.wait_for(timeout=25_000)
            shown = time.time()
            text = await alarm.inner_text()
            assert "1001" in text and "3 times" in text and "warning" in text.lower()
            (user_event,) = ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrRingAlarm", since)
            # Due 15 s (three cn periods) after ringing began, by Asterisk's own clock.
            assert ts(user_event) - ts(dial) == pytest.approx(15.0, abs=0.6)
            latency = shown - ts(user_event)
            assert latency < 1.5, f"the alarm reached the page {latency:.2f} s after it was raised"
            print(f"ring alarm raised -> shown on the page: {latency:.3f} s")  # the figure, with -s
            late = page.locator(f'#live tr[data-call="{call_id}"] .badge.late')
            assert "ring 4" in await late.inner_text()
            assert await page.locator("#n-alarms").inner_text() == "1"
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The agent answers on ring 4 and hangs up first: the page and the record follow.
            await ami.wait_for(lambda e: e.event == "Hangup" and e.get("Channel", "").startswith("Local/x@test-caller")
                               and e["Channel"].endswith(";1"), timeout=15, since=since)
            await page.locator("#live-empty").wait_for(state="visible", timeout=5_000)
            row = page.locator("#agents tbody tr", has_text="Wang Fang")
            await row.wait_for(timeout=5_000)
            cells = await row.locator("td").all_inner_texts()
            assert cells[:5] == ["1001 Wang Fang", "1", "0 (0 %)", "4", "1"]  # answered on ring 4, one alarm
            assert await page.locator("#sl").inner_text() == "0 %"
            await page.screenshot(path=str(ARTIFACTS / "dashboard-after.png"), full_page=True)
            assert blocked == [], f"the page needs something its CSP forbids: {blocked}"
        finally:
            await browser.close()

    record = await api(port, f"/api/calls/{call_id}")
    assert (record["state"], record["agent"], record["rings"], record["within_three"]) == ("ended", "1001", 4, 0)
    assert record["hung_up_first"] == "agent"
    assert [(a["level"], a["rings"]) for a in record["alarms"]] == [("warning", 3)]
    figures = {a["agent"]: a for a in (await api(port, "/api/agents"))["agents"]}
    assert (figures["1001"]["answered"], figures["1001"]["service_level"]) == (1, 0.0)
    assert figures["1001"]["name"] == "Wang Fang" and figures["1001"]["agent_first_hangups"] == 1
