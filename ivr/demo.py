"""``ivr demo``: the embedded switch, the controller, and sample calls that show the rules.

Starts (building once if needed) the embedded Asterisk, runs the controller against it
with simulated agents (``asterisk/ivr-demo.conf``), then places a round of sample calls
every cycle and prints what the switch reports, until Ctrl-C:

* a caller who speaks, answered by agent 1001 within one ring (R1, R2);
* a caller who speaks, whose agents let it ring seven rings (R1: warning and critical
  ring alarms, the apology on answer);
* a silent caller (R3: three prompts 5 s apart, then release).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from pathlib import Path
from typing import Any

from ivr import logs, resources
from ivr.ami.connection import AmiConnection
from ivr.config import load_config
from ivr.controller import Controller
from ivr.prompts import build_prompts, make_test_audio, source_languages
from ivr.switch.embedded import ADMIN_USER, EmbeddedSwitch, Ports

SCENARIOS: list[tuple[str, str, dict[str, str]]] = [
    ("speaking caller, agent answers at once", "speaker", {"__DEMO_RING": "2"}),
    ("speaking caller, agents ring 7 rings", "speaker", {"__DEMO_RING": "32"}),
    ("silent caller", "silent", {}),
]
SHOWN_EVENTS = ("IvrRingAlarm", "IvrSilentCall", "IvrHold", "IvrTransfer", "IvrFallback")

DEMO_TOML = """
[switch]
company = "{company}"

[ami]
host = "127.0.0.1"
port = {ami_port}
username = "ivr"

[agi]
host = "127.0.0.1"
port = {agi_port}

[database]
url = "sqlite:///{db}"

[hold]
# Asterisk records messages inside its root filesystem: point there.
messages_dir = "{messages}"

[[agents]]
number = "1001"
name = "Demo agent 1001"
dial = "Local/1001@ivr-demo-agents"

[[agents]]
number = "1002"
name = "Demo agent 1002"
dial = "Local/1002@ivr-demo-agents"
"""


SHOWN_FIELDS = ("Stage", "Reason", "From", "Agent", "Rings", "Level", "State", "Count",
                "HeldSeconds", "Target")


def describe(event: Any) -> str:
    """One line for people: the rule event and the fields that matter, with the caller."""
    fields = [f"{k}={event[k]}" for k in SHOWN_FIELDS if event.get(k) not in (None, "")]
    return f"{event.get('UserEvent')} ({event.get('CallerIDNum', '?')}): " + ", ".join(fields)


def ensure_prompt_tools() -> None:
    """The prompts are spoken by espeak-ng and converted with ffmpeg: install them with
    apt on a fresh machine (as the embedded switch installs mmdebstrap)."""
    import shutil
    import subprocess

    missing = [pkg for pkg, exe in (("espeak-ng", "espeak-ng"), ("ffmpeg", "ffmpeg")) if not shutil.which(exe)]
    if missing:
        print(f"ivr demo: installing {' '.join(missing)} with apt-get ...", flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True)


def build_demo_prompts(company: str) -> None:
    source = resources.prompt_catalog_dir()
    build_prompts(source, resources.prompts_build_dir(), source_languages(source), company=company,
                  progress=lambda line: print(f"  prompts: {line}", flush=True))


async def run_demo(*, company: str, cycle: float = 60.0, rounds: int | None = None,
                   instance: str = "default") -> None:
    logs.configure(json=False, level="WARNING")
    await asyncio.to_thread(ensure_prompt_tools)
    await asyncio.to_thread(build_demo_prompts, company)  # incremental: fast once built
    switch = EmbeddedSwitch(instance)
    if instance != "default" and not switch.state_file.exists():
        switch = EmbeddedSwitch(instance, ports=Ports.free())  # beside the default one
    await asyncio.to_thread(switch.up)
    make_test_audio(switch.rootfs / "usr/share/asterisk/sounds/ivr-test")
    state = Path(tempfile.mkdtemp(prefix="ivr-demo-"))
    conf = state / "ivr.toml"
    conf.write_text(DEMO_TOML.format(company=company, ami_port=switch.ports.ami,
                                     agi_port=switch.ports.agi, db=state / "ivr.db",
                                     messages=switch.home / "messages"))
    secrets = switch.secrets()
    config = load_config(conf, env={"IVR_AMI_SECRET": secrets.controller, "IVR_HTTP_TOKEN": secrets.http_token})
    controller = Controller(config)
    await controller.start()
    watcher = AmiConnection("127.0.0.1", switch.ports.ami, ADMIN_USER, switch.secrets().admin)
    watcher.subscribe("UserEvent", lambda e: print("  switch says", describe(e), flush=True)
                      if e.get("UserEvent") in SHOWN_EVENTS else None)
    await watcher.start()
    await watcher.wait_connected(10)
    print(f"ivr demo: Asterisk up (AMI 127.0.0.1:{switch.ports.ami}), controller on FastAGI "
          f":{switch.ports.agi}. Ctrl-C to stop.\n"
          f"  dashboard: http://{config.http.host}:{config.http.port}/dashboard?token={secrets.http_token}\n"
          f"  (the token is generated for this switch; `ivr asterisk env` prints it)", flush=True)
    n = 0
    try:
        while rounds is None or n < rounds:
            n += 1
            print(f"\n-- round {n}: placing {len(SCENARIOS)} sample calls", flush=True)
            for title, exten, variables in SCENARIOS:
                print(f"  call: {title}", flush=True)
                await watcher.action({
                    "Action": "Originate", "Channel": f"Local/{exten}@ivr-demo-caller",
                    "Context": "ivr-inbound", "Exten": "s", "Priority": "1", "Async": "true",
                    "CallerID": f"\"Demo caller\" <1380013{n:04d}>",
                    "Variable": ",".join(f"{k}={v}" for k, v in variables.items()),
                })
            await asyncio.sleep(cycle)  # the demo's pacing between rounds, not a test wait
    finally:
        await watcher.close()
        await controller.stop()


def main(company: str, cycle: float, rounds: int | None, instance: str = "default") -> int:
    loop = asyncio.new_event_loop()
    task = loop.create_task(run_demo(company=company, cycle=cycle, rounds=rounds, instance=instance))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    loop.close()
    print("\nivr demo: stopped (the embedded Asterisk keeps running: `ivr asterisk down`).")
    return 0
