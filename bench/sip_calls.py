"""N concurrent SIP callers through the inbound trunk, with real RTP: timer accuracy vs.
app_queue's own reminders, and the controller's CPU as a share of Asterisk's.

    python bench/sip_calls.py --quick                 # N = 20, about 90 s
    nice -n 10 python bench/sip_calls.py              # N = 100, 200, 300
    nice -n 10 python bench/sip_calls.py --n 300 400  # find where it breaks

Like ``concurrent_calls.py`` (whose analysis, AMI recorder, held calls and baseline it
reuses), but the silent callers are SIP calls: one SIPp process (``bench/sipp/
silent_caller.xml``) keeps N calls up (``-l N``) through the trunk (pjsip.conf
``[anonymous]``), each sending the switch's ``ivr-test/line_noise`` (pink noise,
-45 dBFS) as u-law RTP for the whole call, and places the next call when one is
released, until 2N calls. Asterisk decodes and listens to every stream (``TALK_DETECT``),
and the controller runs the greeting, three prompts, three 5 s pauses and the release.
Meanwhile H = max(10, N/4) held caller/agent pairs (Local channels, held through the
HTTP API, reminder at 30 s, choices at 60 s) and H app_queue baseline callers, as in
``concurrent_calls.py``. The switch's RTP range is widened for the SIP calls.

Figures from Asterisk's AMI timestamps (see concurrent_calls.py): pause error, reminder
error (30 s reminder and 60 s choices), app_queue's own announcement error, AGI round
trip; CPU of the controller and of Asterisk from /proc, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    proc_cpu_seconds,
    start_switch,
    stop_switch,
    summary_ms,
    table,
    write_results,
)
from concurrent_calls import (
    HOLD_FOR,
    TOKEN,
    Recorder,
    Usage,
    add_dialplan,
    agi_by_channel,
    agi_latency,
    baseline_errors,
    hold_errors,
    pause_errors,
    start_controller,
    wait_healthy,
)

BENCH = Path(__file__).resolve().parent
SCENARIO = BENCH / "sipp" / "silent_caller.xml"
SIP_CHANNEL = "PJSIP/anonymous-"
RTP_PORTS = (30000, 39999)  # the switch's RTP range for this benchmark (2 ports a call)


def analyse_sip(events: list[dict[str, Any]]) -> dict[str, Any]:
    agi = agi_by_channel(events)
    rtt, turn = agi_latency(agi)
    hold = hold_errors(events, agi)
    base = baseline_errors(events)
    pauses = pause_errors(agi, marker=SIP_CHANNEL)
    released = [e for e in events if e.get("Event") == "Hangup" and e.get("Channel", "").startswith(SIP_CHANNEL)]
    return {
        "pause_error": summary_ms(pauses),
        "reminder_error": summary_ms(hold["reminder"] + hold["choices"]),
        "reminder_only": summary_ms(hold["reminder"]), "choices_only": summary_ms(hold["choices"]),
        "baseline_error": summary_ms(base["first"] + base["spacing"]),
        "agi_round_trip": summary_ms(rtt), "agi_turnaround": summary_ms(turn),
        "sip_calls_ended": len(released),
        "sip_calls_released_by_controller": sum(1 for e in released if e.get("Cause") == "16"),
        "sip_calls_with_three_pauses": sum(
            1 for c, evs in agi.items() if c.startswith(SIP_CHANNEL)
            and sum(1 for e in evs if "IvrSilentCall" in e.get("Command", "")) >= 3),
        "agi_commands": sum(1 for evs in agi.values() for e in evs if e["Event"] == "AGIExecStart"),
    }


def sipp_command(sw: Any, scenario: Path, n: int, total: int, rate: float, tmp: Path) -> list[str]:
    """SIPp keeping ``n`` calls up (``-l``), ``total`` in all, ``rate`` new calls a second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
            "-mp", str(RTP_PORTS[1] + 1000), "-l", str(n), "-m", str(total), "-r", str(max(1, int(rate))),
            "-rp", "1000", "-nostdin", "-trace_err", "-error_file", str(tmp / "sipp_errors.log"),
            "-timeout", "240s", f"127.0.0.1:{sw.ports.sip}"]


async def run_n(sw: Any, n: int, held: int, rate: float, tmp: Path) -> dict[str, Any]:
    import aiohttp

    noise = sw.rootfs / "usr/share/asterisk/sounds/ivr-test/line_noise.ulaw"
    scenario = tmp / "silent_caller.xml"
    scenario.write_text(SCENARIO.read_text().replace("NOISE_FILE", str(noise)))
    proc, http, _cfg = start_controller(sw, tmp)
    usage, ast = Usage(proc.pid), Usage(sw.pid() or 0)
    rec: Recorder | None = None
    sipp: subprocess.Popen[bytes] | None = None
    sipp_cpu = [0.0]
    try:
        await wait_healthy(http, proc)
        rec = await Recorder(sw.ports.ami, sw.secrets().admin).connect()
        await rec.action({"Action": "Filter", "Operation": "Add", "Filter": "Event: Hangup"})
        await add_dialplan(rec, 5.0)  # (its speaking-caller contexts are not used here)
        usage.sample()
        ast.sample()
        stop_sampling = asyncio.Event()

        async def sampler() -> None:
            while not stop_sampling.is_set():
                usage.sample()
                ast.sample()
                if sipp is not None and sipp.poll() is None:
                    try:
                        sipp_cpu[0] = proc_cpu_seconds(sipp.pid)
                    except OSError:
                        pass
                try:
                    await asyncio.wait_for(stop_sampling.wait(), 1.0)
                except TimeoutError:
                    pass

        sampling = asyncio.ensure_future(sampler())
        api = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        failures: list[str] = []
        t_start = time.monotonic()

        async def held_call(i: int) -> None:
            bridged = rec.expect_bridge(f"Local/c{i}")
            await rec.originate(f"Local/c{i}@bench-hold-caller/n", "bench-hold-dial", f"d{i}", f"1390000{i:04d}")
            entered = await asyncio.wait_for(bridged, 30)
            call_id = entered["Linkedid"]
            body = ""
            for _ in range(100):  # the controller may not have seen the bridge yet
                async with api.post(f"http://127.0.0.1:{http}/api/calls/{call_id}/hold") as r:
                    if r.status == 200:
                        break
                    body = await r.text()
                await asyncio.sleep(0.1)
            else:
                failures.append(f"hold {call_id}: {body}")
                return
            await asyncio.sleep(HOLD_FOR)
            async with api.post(f"http://127.0.0.1:{http}/api/calls/{call_id}/resume") as r:
                if r.status != 200:
                    failures.append(f"resume {call_id}: {await r.text()}")

        for i in range(held):
            await rec.originate(f"Local/q{i}@bench-queue-listen/n", "bench-queue", f"q{i}")
        holds = asyncio.gather(*(held_call(i) for i in range(held)))
        # SIPp in the foreground of its own process group; it ends when its 2N calls have.
        command = sipp_command(sw, scenario, n, 2 * n, rate, tmp)
        # A blocking Popen in a coroutine, like concurrent_calls' controller: it returns at once.
        sipp = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                stderr=subprocess.DEVNULL)
        sipp_cmd = " ".join(command)
        await holds
        while sipp.poll() is None and time.monotonic() - t_start < 240:
            await asyncio.sleep(0.5)  # SIPp's own run, bounded
        if sipp.poll() is None:
            failures.append("SIPp still running after 240 s")
            sipp.send_signal(signal.SIGUSR1)  # ask it to stop placing calls
        await asyncio.sleep(4)  # the last thanks and announcements
        cpu_end = usage.samples[-1][1]
        ast_end = ast.samples[-1][1]
        await rec.hang_up_all()
        await rec.hang_up_all(SIP_CHANNEL)
        await api.close()
        stop_sampling.set()
        await sampling
        duration = time.monotonic() - t_start
        result = analyse_sip(rec.events)
        cpu = cpu_end - usage.samples[0][1]
        ast_cpu = ast_end - ast.samples[0][1]
        err = (tmp / "sipp_errors.log").read_text(errors="replace")[-600:] if (tmp / "sipp_errors.log").exists() else ""
        result.update({
            "n": n, "sip_calls_planned": 2 * n, "held_calls": held, "baseline_callers": held,
            "sipp_returncode": sipp.returncode, "sipp_errors_tail": err, "sipp_command": sipp_cmd,
            "duration_s": round(duration, 1), "failures": failures[:20],
            "controller_cpu_pct_avg": round(100 * cpu / duration, 1),
            "asterisk_cpu_pct_avg": round(100 * ast_cpu / duration, 1),
            "sipp_cpu_pct_avg": round(100 * sipp_cpu[0] / duration, 1),
            "controller_share_of_asterisk_pct": round(100 * cpu / ast_cpu, 1) if ast_cpu else None,
            "agi_commands_per_s": round(result["agi_commands"] / duration, 1),
        })
        return result
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.wait()
        if rec is not None:
            rec.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def verdict(r: dict[str, Any]) -> bool:
    """Pause and reminder p99 within 150 ms and within app_queue's own reminder error."""
    base = r["baseline_error"].get("p99_ms")
    limit = min(150.0, base) if base is not None else 150.0
    p, m = r["pause_error"].get("p99_ms"), r["reminder_error"].get("p99_ms")
    ok_calls = r["sip_calls_with_three_pauses"] >= 0.95 * r["sip_calls_planned"]
    return p is not None and m is not None and p <= limit and m <= limit and ok_calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="N concurrent SIP callers (SIPp, real RTP) through the trunk")
    p.add_argument("--n", type=int, nargs="*", default=[100, 200, 300])
    p.add_argument("--quick", action="store_true", help="N = 20 only")
    p.add_argument("--rate", type=float, default=50.0, help="new SIP calls per second while ramping up")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--note", default="", help="what else ran on the machine (saved in the JSON)")
    args = p.parse_args(argv)
    ns = [20] if args.quick else args.n
    sw = start_switch(f"bench-sip-{os.getpid()}", rtp_ports=RTP_PORTS)
    runs = []
    try:
        for n in ns:
            with tempfile.TemporaryDirectory(prefix="ivr-bench-sip-") as tmp:
                held = max(10, n // 4)
                load = os.getloadavg()[0]
                print(f"N={n} SIP callers (2N calls), {held} held calls, {held} baseline callers; "
                      f"load before {load:.2f} ...", flush=True)
                result = asyncio.run(run_n(sw, n, held, args.rate, Path(tmp)))
                result["load_before"] = round(load, 2)
                result["meets_target"] = verdict(result)
                runs.append(result)
                if result["failures"]:
                    print("  failures:", *result["failures"], sep="\n    ")
    finally:
        stop_switch(sw)
    rows = []
    for r in runs:
        pe, re_, be = r["pause_error"], r["reminder_error"], r["baseline_error"]
        rows.append([
            r["n"], f'{r["sip_calls_with_three_pauses"]}/{r["sip_calls_planned"]}', r["held_calls"],
            f'{pe.get("p50_ms")}/{pe.get("p99_ms")}/{pe.get("max_ms")}',
            f'{re_.get("p50_ms")}/{re_.get("p99_ms")}/{re_.get("max_ms")}',
            f'{be.get("p50_ms")}/{be.get("p99_ms")}/{be.get("max_ms")}',
            f'{r["agi_round_trip"].get("p50_ms")}/{r["agi_round_trip"].get("p99_ms")}',
            r["controller_cpu_pct_avg"], r["asterisk_cpu_pct_avg"], r["sipp_cpu_pct_avg"],
            r["controller_share_of_asterisk_pct"], "yes" if r["meets_target"] else "no",
        ])
    print(table(["N SIP", "calls full script/planned", "held", "pause err ms p50/p99/max",
                 "reminder err ms p50/p99/max", "app_queue err ms p50/p99/max", "AGI rtt ms p50/p99",
                 "ctl CPU %", "Asterisk CPU %", "SIPp CPU %", "ctl/Asterisk CPU %", "p99 <= 150 and <= app_queue"],
                rows))
    good = [r["n"] for r in runs if r["meets_target"]]
    print(f"largest N meeting the target in this run: {max(good) if good else 'none'}")
    if not args.no_save:
        name = "sip_calls_quick" if args.quick else "sip_calls"
        targets = {"p99_ms": 150, "vs_baseline": 1.0}
        print(f"-> {write_results(name, {'runs': runs, 'note': args.note, 'targets': targets})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
