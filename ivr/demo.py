"""``ivr demo``: the embedded switch, the controller, and one round of sample calls that
shows all five rules, printed as a timeline.

Starts (building once if needed) the embedded Asterisk instance ``default`` (or
``--instance``), runs the controller in this process against it with simulated callers
and agents (Local channels, ``asterisk/ivr-demo.conf``), and places six calls at once:

====  ==========  ============================================================
rule  caller      what happens
====  ==========  ============================================================
R1    13800001    the agents let it ring 7 rings: warning and critical ring
                  alarms, then the apology when agent 1001 answers
R2    13800002    the greeting of the day; agent 1001 answers within one ring
R3    13800003    a silent caller: three prompts 5 s apart, then released
R4    13800004    put on hold through the HTTP API: reminder at 30 s, the
                  choices at 60 s, resumed through the API (the thank-you)
R5    13800005    warm transfer (HTTP API) to agent 1003, who presses 1: the
                  caller is connected to 1003
R5    13800006    warm transfer to agent 1004, who presses 2: the caller hears
                  the apology and returns to agent 1001
====  ==========  ============================================================

A round takes about 90 s (the hold is the longest). Each rule event the controller
publishes is printed as one line: time since the round started, rule, caller, what
happened. ``--rounds N`` stops after N rounds (default: until Ctrl-C).

Stopping: Ctrl-C or SIGTERM ends the demo within 5 s (exit code 0; 130 for a second
Ctrl-C, which abandons the clean-up). The demo hangs up the calls it placed and stops
the controller (FastAGI, AMI, HTTP, the records database); it leaves the embedded
Asterisk running, as ``ivr asterisk status`` shows (``ivr asterisk down`` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from ivr import logs, resources
from ivr.ami.connection import AmiConnection
from ivr.config import load_config
from ivr.controller import Controller
from ivr.demo_script import DEMO_TOML, SCENARIOS, TRANSFER_TARGETS, Scenario, Timeline
from ivr.greeting import choose_greeting
from ivr.prompts import build_prompts, make_test_audio, source_languages
from ivr.switch.embedded import ADMIN_USER, EmbeddedSwitch
from ivr.switch.host import Ports

ROUND_TIMEOUT = 170.0  # a round must fit in three minutes
STOP_BUDGET = 4.0  # s for the clean-up after Ctrl-C / SIGTERM (the promise is 5 s)


# ---------------------------------------------------------------------- setup
def ensure_prompt_tools() -> None:
    """The prompts are spoken by espeak-ng and converted with ffmpeg: install them with
    apt on a fresh machine (as the embedded switch installs mmdebstrap)."""
    missing = [pkg for pkg, exe in (("espeak-ng", "espeak-ng"), ("ffmpeg", "ffmpeg")) if not shutil.which(exe)]
    if missing:
        print(f"ivr demo: installing {' '.join(missing)} with apt-get ...", flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True)


def build_demo_prompts(company: str) -> None:
    source = resources.prompt_catalog_dir()
    build_prompts(source, resources.prompts_build_dir(), source_languages(source), company=company,
                  progress=lambda line: print(f"  prompts: {line}", flush=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Demo:
    """One demo run: the switch (started, never stopped), the controller, the calls."""

    def __init__(self, *, company: str, instance: str, http_port: int | None,
                 out: Callable[[str], None]) -> None:
        self.company, self.instance, self.http_port, self.out = company, instance, http_port, out
        self.controller: Controller | None = None
        self.watcher: AmiConnection | None = None
        self.switch: EmbeddedSwitch | None = None
        self.timeline = Timeline(out)
        self.placed: set[str] = set()  # Uniqueids (call ids) of the calls this demo placed
        self.tasks: set[asyncio.Task[Any]] = set()
        self._waiters: list[tuple[Callable[[Any], bool], asyncio.Future[Any]]] = []
        self.state: Path | None = None

    @property
    def ctl(self) -> Controller:
        assert self.controller is not None, "the demo's controller is started"
        return self.controller

    @property
    def ami(self) -> AmiConnection:
        """The demo's own AMI connection (its admin user), not the controller's."""
        assert self.watcher is not None, "the demo's AMI connection is started"
        return self.watcher

    # -- switch events --------------------------------------------------------------
    def _on_ami(self, event: Any) -> None:
        if event.get("Event") == "AGIExecStart" and "ring_apology" in str(event.get("Command", "")):
            call_id = str(event.get("Linkedid", ""))
            if call_id in self.timeline.numbers:
                self.timeline.line(time.time(), "R1 ring", call_id, "the caller hears the apology")
        for pred, fut in list(self._waiters):
            if not fut.done():
                try:
                    matched = pred(event)
                except Exception:  # noqa: BLE001 - a malformed event never matches
                    matched = False
                if matched:
                    fut.set_result(event)

    async def wait_ami(self, pred: Callable[[Any], bool], timeout: float) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._waiters.remove(entry)

    async def _follow_bus(self) -> None:
        async for ev in self.ctl.bus.subscribe():
            data = ev.data
            if ev.kind == "greeting.played":
                data = {**data, **self._greeting_words(str(data.get("language") or ""))}
            self.timeline.event(ev.kind, ev.call_id, data, ev.at)

    def _greeting_words(self, language: str) -> dict[str, str]:
        """The day part, holiday and words of the greeting the controller just chose (the
        same choice, made again for the printout)."""
        try:
            g = choose_greeting(self.ctl.now(), self.config, language or None)
        except Exception:  # noqa: BLE001 - the printout only loses its words
            return {}
        return {"daypart": g.daypart, "holiday": g.holiday or "no holiday", "text": g.text}

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        logs.configure(json=False, level="WARNING")
        await asyncio.to_thread(ensure_prompt_tools)
        await asyncio.to_thread(build_demo_prompts, self.company)  # incremental: fast once built
        switch = EmbeddedSwitch(self.instance)
        if self.instance != "default" and not switch.state_file.exists():
            switch = EmbeddedSwitch(self.instance, ports=Ports.free())  # beside the default one
        self.switch = switch
        await asyncio.to_thread(switch.up)
        make_test_audio(switch.rootfs / "usr/share/asterisk/sounds/ivr-test")
        self.state = Path(tempfile.mkdtemp(prefix="ivr-demo-"))
        conf = self.state / "ivr.toml"
        http_port = self.http_port or free_port()
        if self.http_port is None:  # the documented port, unless something already uses it
            http_port = 8780 if port_free(8780) else free_port()
        conf.write_text(DEMO_TOML.format(company=self.company, ami_port=switch.ports.ami,
                                         agi_port=switch.ports.agi, http_port=http_port,
                                         db=self.state / "ivr.db", messages=switch.home / "messages"))
        secrets = switch.secrets()
        config = load_config(conf, env={"IVR_AMI_SECRET": secrets.controller,
                                        "IVR_HTTP_TOKEN": secrets.http_token,
                                        "IVR_AGI_KEY": secrets.agi_key})
        self.config, self.token = config, secrets.http_token
        self.controller = Controller(config)
        await self.controller.start()
        self._spawn(self._follow_bus())
        self.watcher = AmiConnection("127.0.0.1", switch.ports.ami, ADMIN_USER, secrets.admin)
        self.watcher.subscribe("*", self._on_ami)
        await self.watcher.start()
        await self.watcher.wait_connected(10)
        await self.controller.ready(15)
        self.out(f"ivr demo: embedded Asterisk '{switch.name}' up (AMI 127.0.0.1:{switch.ports.ami}), "
                 f"controller on FastAGI :{switch.ports.agi}. Ctrl-C to stop.")
        self.out(f"  dashboard: http://{config.http.host}:{config.http.port}/dashboard?token={secrets.http_token}")
        self.out("  (the token is generated for this switch; `ivr asterisk env` prints it)")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop(self) -> None:
        """Hang up the demo's calls and stop the controller; never blocks long: every
        step is bounded, and the whole is bounded by the caller (STOP_BUDGET)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.watcher is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.5):
                    await self.hang_up_all()
        if self.controller is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.controller.stop(grace=0.5)
            # If that was cut short, still close the records database: its aiosqlite worker
            # is a non-daemon thread that would keep the interpreter alive at exit.
            records = self.controller.operations.records
            if records.store is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.5):
                        await records.stop()
        if self.watcher is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await self.watcher.close()

    async def hang_up_all(self) -> None:
        """Hang up every channel of the calls the demo placed (the agents and transfer
        targets share the caller's Linkedid)."""
        reply = await self.ami.action({"Action": "CoreShowChannels"}, 1.0, as_list=True)
        rows = [m for m in reply if m.get("Event") == "CoreShowChannel"]
        mine = [r["Channel"] for r in rows
                if r.get("Linkedid") in self.placed or r.get("Uniqueid", "").split(";")[0] in self.placed
                or "@ivr-demo-" in r.get("Channel", "")]
        for channel in mine:
            with contextlib.suppress(Exception):
                await self.ami.action({"Action": "Hangup", "Channel": channel}, 1.0)

    # -- one round ------------------------------------------------------------------
    async def round(self, n: int) -> None:
        self.timeline.t0 = time.time()
        tag = f"{os.getpid()}-{int(self.timeline.t0)}"
        self.out(f"\n-- round {n}: {len(SCENARIOS)} calls at once (about 90 s)")
        for sc in SCENARIOS:
            self.out(f"   {sc.rule} caller {sc.number}: {sc.title}")
        async with asyncio.TaskGroup() as group:
            for sc in SCENARIOS:
                group.create_task(self.call(sc, f"demo-{sc.key}-{tag}"))
        self.out(f"-- round {n} done in {time.time() - self.timeline.t0:.0f} s")

    async def call(self, sc: Scenario, call_id: str) -> None:
        self.timeline.numbers[call_id] = sc.number
        self.placed.add(call_id)
        ended = self._spawn(self.wait_ami(lambda e: e.get("Event") == "Hangup" and e.get("Uniqueid") == call_id,
                                          ROUND_TIMEOUT))
        bridged = self._spawn(self.wait_ami(
            lambda e: e.get("Event") == "BridgeEnter" and e.get("Uniqueid") == call_id, ROUND_TIMEOUT))
        await self.ami.action({
            "Action": "Originate", "Channel": f"Local/{sc.caller}@ivr-demo-caller",
            "Context": "ivr-inbound", "Exten": "s", "Priority": "1", "Async": "true",
            "ChannelId": call_id, "OtherChannelId": f"{call_id}-2",
            "CallerID": f"\"Demo {sc.rule}\" <{sc.number}>",
            "Variable": ",".join(f"{k}={v}" for k, v in sc.variables.items()),
        })
        try:
            if sc.key == "hold":
                await bridged
                await asyncio.sleep(1.0)  # the scenario: the agent talks a second, then holds
                await self.api("POST", f"/api/calls/{call_id}/hold")
                await self.wait_ami(lambda e: e.get("UserEvent") == "IvrHold" and e.get("Uniqueid") == call_id
                                    and e.get("State") == "choices", 75)
                await asyncio.sleep(3.0)  # the scenario: the agent comes back 3 s after the choices
                await self.api("POST", f"/api/calls/{call_id}/resume")
                await self.wait_ami(lambda e: e.get("Event") == "BridgeEnter" and e.get("Uniqueid") == call_id, 20)
                self.timeline.line(time.time(), "R4 hold", call_id, "caller talking with agent 1001 again")
                await asyncio.sleep(3.0)  # the scenario: a few words, then goodbye
                await self.end_call(call_id)
            elif sc.key in TRANSFER_TARGETS:
                await bridged
                await asyncio.sleep(1.0)
                await self.api("POST", f"/api/calls/{call_id}/transfer", {"target": TRANSFER_TARGETS[sc.key]})
                final = await self.wait_ami(
                    lambda e: e.get("UserEvent") == "IvrTransfer" and e.get("Uniqueid") == call_id
                    and e.get("State") in ("completed", "returned", "abandoned"), 60)
                back = await self.wait_ami(lambda e: e.get("Event") == "BridgeEnter"
                                           and e.get("Uniqueid") == call_id, 20)
                who = "the target" if final.get("State") == "completed" else "agent 1001"
                self.timeline.line(time.time(), "R5 xfer", call_id,
                                   f"caller talking with {who} (bridge {str(back.get('BridgeUniqueid', ''))[:8]})")
                await asyncio.sleep(3.0)
                await self.end_call(call_id)
            else:
                bridged.cancel()
            hangup = await ended
            self.timeline.line(time.time(), "--", call_id, f"call ends ({hangup.get('Cause-txt', 'hang-up')})")
        except TimeoutError:
            self.timeline.line(time.time(), "!!", call_id, "did not finish in time: hanging up")
            await self.end_call(call_id)

    async def end_call(self, call_id: str) -> None:
        reply = await self.ami.action({"Action": "CoreShowChannels"}, 5.0, as_list=True)
        for row in reply:
            if row.get("Event") == "CoreShowChannel" and row.get("Linkedid") == call_id:
                with contextlib.suppress(Exception):
                    await self.ami.action({"Action": "Hangup", "Channel": row["Channel"]}, 5.0)

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The controller's HTTP API, as an agent's desktop tool would call it."""
        url = f"http://{self.config.http.host}:{self.config.http.port}{path}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                http.request(method, url, json=body, headers={"Authorization": f"Bearer {self.token}"}) as r:
            data = await r.json()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {r.status} {data}")
            return data


async def run_demo(*, company: str, cycle: float = 0.0, rounds: int | None = None,
                   instance: str = "default", http_port: int | None = None,
                   out: Callable[[str], None] | None = None) -> None:
    out = out or (lambda line: print(line, flush=True))
    demo = Demo(company=company, instance=instance, http_port=http_port, out=out)
    try:
        await demo.start()
        n = 0
        while rounds is None or n < rounds:
            n += 1
            started = time.monotonic()
            await demo.round(n)
            if rounds is None or n < rounds:
                await asyncio.sleep(max(0.0, cycle - (time.monotonic() - started)))  # pacing, not a wait
    finally:
        await asyncio.shield(_bounded_stop(demo))


async def _bounded_stop(demo: Demo) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_BUDGET):
            await demo.stop()


def main(company: str, cycle: float, rounds: int | None, instance: str = "default",
         http_port: int | None = None) -> int:
    """Run the demo; Ctrl-C / SIGTERM: clean up (at most STOP_BUDGET s), exit 0."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(run_demo(company=company, cycle=cycle, rounds=rounds, instance=instance,
                                     http_port=http_port))
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C: give up on the clean-up at once
            os._exit(130)
        stopping = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    code = 0
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # noqa: BLE001 - reported as the command's error
        print(f"ivr demo: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # Nothing of the demo may outlive it: cancel leftovers, and do not wait for the
        # default executor's threads (a switch start in progress) at interpreter exit.
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=0.5))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    print("\nivr demo: stopped (the embedded Asterisk keeps running: `ivr asterisk down` stops it).",
          flush=True)
    return _exit_without_stragglers(code)


def _exit_without_stragglers(code: int, budget: float = 0.5) -> int:
    """A non-daemon thread still alive here (a switch start still running in the default
    executor, a database worker nobody closed) would keep the interpreter alive at exit:
    wait ``budget`` s for them, then name them and leave without waiting."""
    deadline = time.monotonic() + budget
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if left:
        print(f"ivr demo: leaving without waiting for threads {left}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)
    return code
