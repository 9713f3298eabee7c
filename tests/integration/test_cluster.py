"""Controller pairs on the real switch and a real PostgreSQL (README "Controller pairs").

Two nodes run as real processes (``python -m ivr run --config ...``, so SIGKILL is real)
with the same switch, the same PostgreSQL and ``[cluster]``; ``IVR_AGI`` lists both FastAGI
addresses. What the switch does is asserted from the admin AMI recorder's events: ring
alarms are UserEvents (``IvrRingAlarm``), FastAGI sessions show as ``AGIExecStart``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import REPO
from tests.integration.amiproxy import AmiProxy
from tests.integration.amitools import AmiRecorder, ts
from tests.integration.conftest import _free_tcp_port
from tests.integration.test_rings import add_actors, alarms, call
from tests.pgserver import postgres_server

pytestmark = pytest.mark.integration
PERIOD = 1.0  # s a ring: [rings] on_ms + off_ms
TAKEOVER = 2.0  # s: the bound, from SIGKILL to the standby acting


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    with postgres_server() as url:
        yield url


class Node:
    """One ``ivr run`` process of the pair."""

    def __init__(self, name: str, switch: Any, pg: str, tmp: Path, db_url: str = "", extra: str = "",
                 ami_port: int = 0) -> None:
        self.name, self.tmp = name, tmp
        self.agi_port, self.http_port = _free_tcp_port(), _free_tcp_port()
        user, secret = ("ivr", switch.embedded.secrets().controller) if switch.embedded else (
            switch.username, switch.secret)
        self.secret, self.agi_key = secret, switch.agi_key
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            f'[ami]\nhost = "{switch.ami_host}"\nport = {ami_port or switch.ami_port}\nusername = "{user}"\n'
            "ping_interval = 1.0\nping_timeout = 1.0\n\n"
            f'[agi]\nhost = "127.0.0.1"\nport = {self.agi_port}\n\n'
            f'[http]\nport = {self.http_port}\n\n'
            f'[database]\nurl = "{db_url or pg}"\nspool_dir = "{tmp / (name + "-spool")}"\n\n'
            f'[prompts]\nbuild = "{REPO / "prompts" / "build"}"\n\n'
            f"[rings]\non_ms = {int(PERIOD * 500)}\noff_ms = {int(PERIOD * 500)}\nring_timeout = 45\n\n"
            f'[cluster]\nnode = "{name}"\nswitch = "{tmp.name[:40]}"\n{extra}')
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        env = {**os.environ, "IVR_AMI_SECRET": self.secret, "IVR_AGI_KEY": self.agi_key, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "ivr", "run", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    async def health(self) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession() as s, s.get(
                    f"http://127.0.0.1:{self.http_port}/healthz", timeout=aiohttp.ClientTimeout(total=3)) as r:
                return dict(await r.json())
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return {}

    async def wait_role(self, role: str, timeout: float = 20.0) -> dict[str, Any]:
        """Poll /healthz (bounded) until the node says ``role`` with AMI connected."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            h = await self.health()
            if h.get("role") == role and h.get("checks", {}).get("ami", {}).get("ok"):
                return h
            if self.proc is not None and self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)  # poll: /healthz, bounded by timeout
        raise AssertionError(f"node {self.name} not {role} within {timeout} s: {await self.health()}\n"
                             + self.log.read_text(errors="replace")[-3000:])

    async def metric(self, name: str) -> str:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.http_port}/metrics") as r:
            return "\n".join(line for line in (await r.text()).splitlines() if line.startswith(name))


@contextlib.asynccontextmanager
async def started_pair(switch: Any, pg: str, tmp: Path, ami: AmiRecorder,
                       a_db: str = "", extra: str = "", a_ami: int = 0) -> AsyncIterator[tuple[Node, Node]]:
    """Node a (the leader: started first) and node b (standby), IVR_AGI listing both;
    ``extra``: more configuration for both; ``a_db``, ``a_ami``: node a's own database
    URL and AMI port (a proxy's)."""
    a = Node("a", switch, pg, tmp, a_db, extra, ami_port=a_ami).start()
    try:
        await a.wait_role("leader")
        b = Node("b", switch, pg, tmp, extra=extra).start()
        try:
            await b.wait_role("standby")
            old = await getvar(ami, "IVR_AGI")
            await set_agi(ami, f"agi://127.0.0.1:{a.agi_port} agi://127.0.0.1:{b.agi_port}")
            try:
                yield a, b
            finally:
                await set_agi(ami, old)
        finally:
            b.stop()
    finally:
        a.stop()


@pytest.fixture
async def pair(switch, pg: str, tmp_path: Path, ami: AmiRecorder) -> AsyncIterator[tuple[Node, Node]]:
    async with started_pair(switch, pg, tmp_path, ami) as nodes:
        yield nodes


async def getvar(ami: AmiRecorder, name: str) -> str:
    return str((await ami.action({"Action": "Getvar", "Variable": name})).get("Value") or "")


async def set_agi(ami: AmiRecorder, value: str) -> None:
    await ami.action({"Action": "Setvar", "Variable": "IVR_AGI", "Value": value})


def fallbacks(ami: AmiRecorder, since: int) -> list:
    return ami.find(lambda e: e.event == "UserEvent" and e.get("UserEvent") == "IvrFallback", since)


async def test_pair_has_one_leader_and_says_so(pair: tuple[Node, Node]) -> None:
    a, b = pair
    ha, hb = await a.health(), await b.health()
    assert (ha["role"], hb["role"]) == ("leader", "standby")
    assert ha["cluster"]["node"] == "a" and hb["cluster"]["token"] == 0
    assert 'ivr_cluster_leader{node="a"} 1.0' in await a.metric("ivr_cluster_leader")
    assert 'ivr_cluster_leader{node="b"} 0.0' in await b.metric("ivr_cluster_leader")


@pytest.mark.parametrize("death", ["sigkill", "db-cut"])
async def test_leader_lost_mid_ring_standby_takes_over_nothing_twice_caller_kept(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path, death: str) -> None:
    """An agent rings 9 rings (1 s each). Both nodes follow the leg; only the leader
    raises the warning (3 rings). SIGKILL the leader right after it: the standby is the
    leader within 2 s, raises the critical alarm (6 rings) once and on time, and at the
    answer the caller's agent-answered FastAGI skips the dead node (first in IVR_AGI) and
    is served by the new leader: the caller is bridged with the agent, never dropped.
    ``db-cut``: the leader lives on but its PostgreSQL connections freeze (half-open, the
    worst case: nothing fails, nothing comes back), new ones too."""
    socket = pg.split("host=", 1)[1] + "/.s.PGSQL.5432"
    async with AmiProxy(socket, 0) as proxy:
        a_db = f"postgresql://ivr@127.0.0.1:{proxy.port}/postgres" if death == "db-cut" else ""
        async with started_pair(switch, pg, tmp_path, ami, a_db) as (a, b):
            await _lose_leader_mid_ring(a, b, ami, pg, proxy, death)


async def _lose_leader_mid_ring(a: Node, b: Node, ami: AmiRecorder, pg: str, proxy: AmiProxy,
                                death: str) -> None:
    await add_actors(ami, {})
    await ami.add_dialplan("test-agent", "r9", ["Ringing()", f"Wait({9 * PERIOD})", "Answer()", "Wait(30)", "Hangup()"])
    since = len(ami.events)
    await call(ami, "7009=Local/r9@test-agent")
    warning = (await ami.wait_for(lambda e: e in alarms(ami, since) and e.get("Level") == "warning",
                                  timeout=10, since=since))[0]
    # A global the leader publishes, changed behind its back: the new leader publishes
    # its globals again at takeover (a standby's were withheld).
    old_timeout = await getvar(ami, "IVR_AGENT_TIMEOUT")
    await ami.action({"Action": "Setvar", "Variable": "IVR_AGENT_TIMEOUT", "Value": "7"})
    if death == "sigkill":
        a.kill()
    else:
        proxy.freeze()
    killed = time.monotonic()
    await b.wait_role("leader", timeout=5)
    takeover = time.monotonic() - killed
    print(f"\ntakeover after {death}: {takeover:.3f} s")
    (ARTIFACTS := REPO / "test-artifacts").mkdir(exist_ok=True)
    with (ARTIFACTS / "cluster-takeover.txt").open("a") as out:
        out.write(f"{death} {takeover:.3f}\n")
    assert takeover <= TAKEOVER, f"takeover took {takeover:.3f} s"
    end = time.monotonic() + 3
    while await getvar(ami, "IVR_AGENT_TIMEOUT") != "45":  # bounded: Asterisk's own state
        assert time.monotonic() < end, "the new leader did not publish its dialplan globals"
        await asyncio.sleep(0.05)  # poll: Asterisk's own state, bounded
    await ami.action({"Action": "Setvar", "Variable": "IVR_AGENT_TIMEOUT", "Value": old_timeout})

    critical = (await ami.wait_for(lambda e: e in alarms(ami, since) and e.get("Level") == "critical",
                                   timeout=10, since=since))[0]
    begin = ami.find(lambda e: e.event == "DialBegin" and "r9@test-agent" in e.get("DestChannel", ""), since)[0]
    # On time: 6 rings after the dial began (the same tolerance as the single-node tests).
    assert abs(ts(critical) - ts(begin) - 6 * PERIOD) < 1.0, ts(critical) - ts(begin)
    assert abs(ts(warning) - ts(begin) - 3 * PERIOD) < 1.0
    # The caller reaches the agent: the new leader served agent-answered.
    caller = lambda e: e.get("Channel", "").startswith("Local/x@test-caller") and e["Channel"].endswith(";1")
    await ami.wait_for(lambda e: e.event == "AGIExecStart" and caller(e)
                       and e.get("Command", "") == 'SET VARIABLE IVR_RESULT "played"', timeout=15, since=since)
    bridged = (await ami.wait_for(lambda e: e.event == "BridgeEnter" and caller(e), timeout=20, since=since))[0]
    # The caller was never dropped: its leg lived on until it was bridged with the agent.
    assert not ami.find(lambda e: e.event == "Hangup" and caller(e), since)
    await ami.action({"Action": "Hangup", "Channel": bridged["Channel"]})
    await ami.wait_for(lambda e: e.event == "Hangup" and caller(e), timeout=10, since=since)
    # Nothing twice: exactly one warning and one critical for the leg.
    assert sorted(e["Level"] for e in alarms(ami, since)) == ["critical", "warning"]
    assert not fallbacks(ami, since)
    hb = await b.health()
    assert hb["cluster"]["token"] >= 2 and hb["cluster"]["takeovers"] == 1
    if death == "db-cut":  # the old leader lives and knows it is not the leader
        assert (await a.health()).get("role") == "standby"
        proxy.thaw()
    # The call records (one PostgreSQL for both nodes): both nodes record the switch's
    # facts under the same ids, each alarm is recorded by its sender: no event twice.
    kinds = await recorded(pg, begin["Linkedid"], until_kind="call.ended")
    assert kinds.count("ring.started") == 1 and kinds.count("ring.answered") == 1, kinds
    assert kinds.count("call.ended") == 1 and kinds.count("ring.alarm") in (1, 2), kinds


async def recorded(pg: str, call_id: str, until_kind: str, timeout: float = 15.0) -> list[str]:
    """The kinds of the call's recorded events, once ``until_kind`` is among them."""
    import asyncpg

    end = time.monotonic() + timeout
    conn = await asyncpg.connect(pg)
    try:
        while True:
            rows = await conn.fetch("SELECT kind FROM call_events WHERE call_id = $1 ORDER BY at", call_id)
            kinds = [r["kind"] for r in rows]
            if until_kind in kinds or time.monotonic() > end:
                return kinds
            await asyncio.sleep(0.1)  # poll: the records, bounded by timeout
    finally:
        await conn.close()


async def test_fastagi_failover_skips_a_dead_address_and_a_standby(
        pair: tuple[Node, Node], ami: AmiRecorder) -> None:
    """IVR_AGI = dead, standby, leader: the inbound call is served by the leader (its
    greeting plays), not sent to the fallback queue."""
    a, b = pair
    dead = _free_tcp_port()
    await set_agi(ami, f"agi://127.0.0.1:{dead} agi://127.0.0.1:{b.agi_port} agi://127.0.0.1:{a.agi_port}")
    await ami.add_dialplan("test-caller", "fo", ["Answer()", "Wait(6)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/fo@test-caller", "ivr-inbound", "s")
    inbound = lambda e: e.get("Channel", "").startswith("Local/fo@test-caller") and e["Channel"].endswith(";1")
    standby = (await ami.wait_for(lambda e: e.event == "AGIExecStart" and inbound(e)
                                  and e.get("Command", "") == 'SET VARIABLE IVR_RESULT "standby"',
                                  timeout=10, since=since))[0]
    stream = (await ami.wait_for(lambda e: e.event == "AGIExecStart" and inbound(e)
                                 and e.get("Command", "").startswith("STREAM FILE"), timeout=10, since=since))[0]
    assert ts(stream) > ts(standby)
    await ami.wait_for(lambda e: e.event == "Hangup" and inbound(e), timeout=20, since=since)
    assert not fallbacks(ami, since)


async def test_no_leader_at_all_sends_the_call_to_the_fallback_queue(
        pair: tuple[Node, Node], ami: AmiRecorder) -> None:
    """IVR_AGI lists only the standby and a dead address: after three passes the call
    goes to the fallback queue (Reason: unreachable), never left in silence."""
    _, b = pair
    await set_agi(ami, f"agi://127.0.0.1:{_free_tcp_port()} agi://127.0.0.1:{b.agi_port}")
    await ami.add_dialplan("test-caller", "nl", ["Answer()", "Wait(8)", "Hangup()"])
    since = len(ami.events)
    await ami.originate("Local/nl@test-caller", "ivr-inbound", "s")
    fb = (await ami.wait_for(lambda e: e in fallbacks(ami, since), timeout=10, since=since))[0]
    assert fb["Reason"] == "unreachable"
    inbound = lambda e: e.get("Channel", "").startswith("Local/nl@test-caller") and e["Channel"].endswith(";1")
    tries = ami.find(lambda e: e.event == "AGIExecStart" and inbound(e)
                     and e.get("Command", "") == 'SET VARIABLE IVR_RESULT "standby"', since)
    assert len(tries) == 3
    await ami.wait_for(lambda e: e.event == "Hangup" and inbound(e), timeout=20, since=since)




async def test_doctor_beside_a_standby_names_the_leader_and_fails_when_none_leads(
        switch, ami: AmiRecorder, pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ivr doctor` with a standby's config: this node is a healthy standby, node a leads
    (its lease fresh, its API answering role=leader), every check passes. With both nodes
    gone and the lease run out, `ivr doctor` exits non-zero saying no node leads."""
    from ivr.config import load_config
    from ivr.doctor import run_doctor

    async with started_pair(switch, pg, tmp_path, ami) as (a, b):
        monkeypatch.setenv("IVR_AMI_SECRET", b.secret)
        monkeypatch.setenv("IVR_AGI_KEY", b.agi_key)
        checks = {c.name: c for c in await run_doctor(load_config(str(b.config)), timeout=10)}
        # (the embedded switch A has no systemname, which a switch of its own name needs: test_doctor)
        assert [c.line() for c in checks.values() if not c.ok and c.name != "switch systemname"] == []
        assert "node 'b' is a healthy standby" in checks["cluster node"].detail, checks["cluster node"].line()
        print("\n" + "\n".join(c.line() for c in checks.values()))
        leader = checks["cluster leader"].detail
        assert "node 'a' leads" in leader and f"127.0.0.1:{a.http_port}" in leader and "role=leader" in leader, leader
        a.kill()
        b.stop()
    end = time.monotonic() + 10
    while await _lease_live(pg, tmp_path.name[:40]):  # bounded: PostgreSQL's own clock
        assert time.monotonic() < end, "the lease never ran out"
        await asyncio.sleep(0.1)  # poll: PostgreSQL's own clock, bounded
    env = {**os.environ, "IVR_AMI_SECRET": b.secret, "IVR_AGI_KEY": b.agi_key, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "doctor", "--config", str(b.config), "--timeout", "5",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
    assert proc.returncode == 1, out
    assert "[FAIL] cluster leader: no node leads switch" in out, out
    assert "[FAIL] cluster node: node 'b' does not answer" in out, out
    print("\n" + out)


async def _lease_live(pg: str, name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(pg)
    try:
        return bool(await conn.fetchval("SELECT expires_at > now() FROM ivr_lease WHERE switch = $1", name))
    finally:
        await conn.close()
