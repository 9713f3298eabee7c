"""Record the AMI event stream the controller sees, from the real embedded switch, into
``bench/data/ami_stream.raw.gz`` (the template that ``ami_ingest.py`` replays).

    python bench/record_ami.py            # about 75 s

An embedded Asterisk instance on free ports and a real :class:`ivr.controller.Controller`
run in this process. Callers (Local channels) enter ``ivr-inbound``, speak during the
greeting, are handed to the agents, and the agent leg (a Local channel that rings, then
answers) rings 1, 2, 4 or 7 rings (cn cadence, 5 s a ring), or never answers so that the
hunt moves on; the agent talks a few seconds and hangs up. So the stream has every kind
of event the controller handles: inbound AGI, TALK_DETECT, dials, rings, ring alarms
(warning and critical), answers, bridges, hang-ups.

The bytes are those the controller's own AMI user (``ivr``, least privilege, with its
event filters) receives, recorded on a second connection of that user, exactly as they
came off the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, start_switch, stop_switch

# ring seconds before the agent answers (None: never; the hunt moves on after 40 s)
RING_PLAN = (2, 8, 17, 2, 33, 8, None, 2, 17, 8)
AGENT_TALK = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _raw_record(host: str, port: int, user: str, secret: str, out: bytearray, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: on\r\n\r\n".encode())
    await writer.drain()
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            read = asyncio.ensure_future(reader.read(65536))
            done, _ = await asyncio.wait({read, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                break
            chunk = read.result()
            if not chunk:
                break
            out += chunk
    finally:
        stopper.cancel()
        writer.close()


async def record(sw, calls: int, out_path: Path) -> int:  # type: ignore[no-untyped-def]  # sw: an EmbeddedSwitch
    from ivr.config import load_config
    from ivr.controller import Controller
    from ivr.switch.embedded import ADMIN_USER
    from tests.integration.amitools import AmiRecorder

    tmp = Path(tempfile.mkdtemp(prefix="ivr-bench-rec-"))
    cfg = tmp / "ivr.toml"
    cfg.write_text(
        f'[ami]\nhost = "127.0.0.1"\nport = {sw.ports.ami}\nusername = "ivr"\n\n'
        f'[agi]\nhost = "127.0.0.1"\nport = {sw.ports.agi}\n\n'
        f'[http]\nport = {_free_port()}\n\n[database]\nurl = "sqlite:///{tmp / "ivr.db"}"\n\n'
        f'[hold]\nmessages_dir = "{tmp / "messages"}"\n\n'
        '[[agents]]\nnumber = "1001"\ndial = "Local/r2@bench-agents"\n'
    )
    config = load_config(cfg, env={"IVR_AMI_SECRET": sw.secrets().controller})
    ctl = Controller(config)
    await ctl.start()
    await ctl.ami.wait_connected(10)
    admin = await AmiRecorder("127.0.0.1", sw.ports.ami, ADMIN_USER, sw.secrets().admin).connect()
    await admin.add_dialplan("bench-caller", "_s.", [
        "Answer()", "Playback(ivr-test/caller_speech)", "Wait(90)", "Hangup()"])
    for ring in {r for r in RING_PLAN if r is not None}:
        await admin.add_dialplan("bench-agents", f"r{ring}", [
            "Ringing()", f"Wait({ring})", "Answer()", f"Wait({AGENT_TALK})", "Hangup()"])
    await admin.add_dialplan("bench-agents", "never", ["Ringing()", "Wait(120)", "Hangup()"])

    data = bytearray()
    stop = asyncio.Event()
    recorder = asyncio.ensure_future(
        _raw_record("127.0.0.1", sw.ports.ami, "ivr", sw.secrets().controller, data, stop))
    await asyncio.sleep(0.5)  # the recorder's login precedes the first call (bounded, not a wait-for)
    for i in range(calls):
        ring = RING_PLAN[i % len(RING_PLAN)]
        hunt = (f"1001=Local/r{ring}@bench-agents" if ring is not None
                else "1001=Local/never@bench-agents|1002=Local/r2@bench-agents")
        await admin.originate(f"Local/s{i}@bench-caller", "ivr-inbound", "s", caller_id=f"1380000{i:04d}",
                              variables={"IVR_AGENTS": hunt, "IVR_AGENT_TIMEOUT": "40"}, timeout_ms=10000)
        await asyncio.sleep(1.0)  # a call a second: arrivals spread like real traffic
    deadline = time.monotonic() + 90
    while await admin.channels() and time.monotonic() < deadline:
        await asyncio.sleep(1.0)  # polling the switch's own state, bounded
    stop.set()
    await recorder
    admin.close()
    await ctl.stop()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out_path, "wb", compresslevel=9) as f:
        f.write(bytes(data))
    events = bytes(data).count(b"\r\nEvent: ")
    print(f"recorded {len(data)} bytes, {events} events -> {out_path}")
    return events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--out", type=Path, default=DATA / "ami_stream.raw.gz")
    args = p.parse_args(argv)
    sw = start_switch(f"bench-rec-{int(time.time())}")
    try:
        asyncio.run(record(sw, args.calls, args.out))
    finally:
        stop_switch(sw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
