r"""N concurrent SIP callers through the inbound trunk, with real RTP: timer accuracy vs.
app_queue's own reminders, and the controller's CPU as a share of Asterisk's.

    python bench/sip_calls.py --quick                 # N = 20, about 90 s
    nice -n 10 python bench/sip_calls.py              # N = 100, 200, 300
    nice -n 10 python bench/sip_calls.py --n 300 400  # find where it breaks

Every timed call is a SIP call with real RTP; the shared machinery (AMI recorder,
analysis, controller process, sampling, app_queue baseline) is ``callbench.py``:

* **silent callers**: one SIPp process (``bench/sipp/silent_caller.xml``) keeps N calls
  up (``-l N``) through the trunk (pjsip.conf ``[anonymous]``), 2N in all, each sending
  the switch's ``ivr-test/line_noise`` (pink noise, -45 dBFS) as u-law RTP for the whole
  call; Asterisk decodes and listens to every stream (``TALK_DETECT``) and the controller
  runs the greeting, three prompts, three 5 s pauses and the release (the BYE);
* **held calls**: H = max(10, N/4) SIP callers (the same scenario, From 137..., sent to
  extension ``benchhold``, which the bench adds to ``ivr-inbound``) each ``Dial``\ ed to
  an agent phone (one SIPp UAS, ``bench/sipp/hold_agent.xml``, its own RTP) that presses
  the hold button 2 s after answering (re-INVITE ``a=sendonly``: AMI ``Hold`` on the
  agent leg, the controller holds the caller as for any phone), resumes after 65 s
  (reminder at 30 s, choices at 60 s on the caller's SIP channel) and hangs up 5 s later;
* **baseline**: H app_queue callers (Local channels, as in ``concurrent_calls.py``:
  ``TALK_DETECT`` on the caller's side of a Local channel hears the announcements; app_queue's
  timer does not depend on the channel type).

The switch's RTP range is widened for the SIP calls. Figures from Asterisk's AMI
timestamps: pause error (silent SIP callers), reminder error (held SIP callers: 30 s
reminder and 60 s choices), app_queue's own announcement error, AGI round trip; CPU of
the controller, Asterisk and the SIPp processes from /proc, and the controller's AMI
keep-alive as its log tells it (late Pongs, reconnects).
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

from callbench import (
    SHIPPED_HOLD,
    HoldTiming,
    Recorder,
    Sampling,
    Usage,
    add_baseline_dialplan,
    agi_by_channel,
    agi_refused,
    baseline_errors,
    call_figures,
    controller_log_figures,
    hold_errors,
    pause_errors,
    queue_callers,
    start_controller,
    stop_controller,
    wait_healthy,
)
from common import spread, start_switch, stop_switch, table, write_results

BENCH = Path(__file__).resolve().parent
SCENARIO = BENCH / "sipp" / "silent_caller.xml"
AGENT_SCENARIO = BENCH / "sipp" / "hold_agent.xml"
SIP_CHANNEL = "PJSIP/anonymous-"
SILENT_FROM, HELD_FROM = "139", "137"  # the From user's prefix of each kind of SIP caller
HOLD_EXTEN = "benchhold"
HOLD_AFTER, BYE_AFTER = 2.0, 5.0  # s: the agent presses hold after answering; hangs up after resuming
RTP_PORTS = (30000, 39999)  # the switch's RTP range for this benchmark (2 ports a call)
SIPP_MEDIA = {"silent": 41000, "held": 46000, "agents": 52000}  # each SIPp's own RTP ports from here


def analyse_sip(events: list[dict[str, Any]], timing: HoldTiming = SHIPPED_HOLD) -> dict[str, Any]:
    agi = agi_by_channel(events)
    released = [e for e in events if e.get("Event") == "Hangup" and e.get("Channel", "").startswith(SIP_CHANNEL)
                and e.get("CallerIDNum", SILENT_FROM).startswith(SILENT_FROM)]
    held = {e.get("Uniqueid") for e in events if e.get("Event") == "UserEvent" and e.get("UserEvent") == "IvrHold"
            and e.get("State") == "start" and e.get("Channel", SIP_CHANNEL).startswith(SIP_CHANNEL)}
    resumed = {e.get("Uniqueid") for e in events if e.get("Event") == "UserEvent"
               and e.get("UserEvent") == "IvrHold" and e.get("State") == "resume"} & held
    hold = hold_errors(events, agi, timing.interval, timing.choices_at)
    return {
        **call_figures(agi, pause_errors(agi, marker=SIP_CHANNEL), hold, baseline_errors(events)),
        "sip_calls_ended": len(released),
        "sip_calls_released_by_controller": sum(1 for e in released if e.get("Cause") == "16"),
        "sip_calls_with_three_pauses": sum(
            1 for c, evs in agi.items() if c.startswith(SIP_CHANNEL)
            and sum(1 for e in evs if "IvrSilentCall" in e.get("Command", "")) >= 3),
        "sip_holds_started": len(held), "sip_holds_resumed": len(resumed),
    }


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sipp_command(sw: Any, scenario: Path, n: int, total: int, rate: float, tmp: Path, *,
                 media: int = SIPP_MEDIA["silent"], name: str = "sipp", uas: bool = False,
                 extra: tuple[str, ...] = ()) -> list[str]:
    """SIPp keeping ``n`` calls up (``-l``), ``total`` in all, ``rate`` new calls a second
    (a UAC calling the switch), or answering ``total`` calls (``uas``)."""
    command = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(_free_udp_port()),
               "-mp", str(media), "-m", str(total), "-nostdin", "-trace_err",
               "-error_file", str(tmp / f"{name}_errors.log"), "-timeout", "240s", *extra]
    if uas:
        return command
    return [*command, "-l", str(n), "-r", str(max(1, int(rate))), "-rp", "1000", f"127.0.0.1:{sw.ports.sip}"]


def scenario_files(sw: Any, tmp: Path) -> dict[str, Path]:
    """The three SIPp scenarios of a run, with the switch's audio files written in."""
    noise = sw.rootfs / "usr/share/asterisk/sounds/ivr-test/line_noise.ulaw"
    caller = SCENARIO.read_text().replace("NOISE_FILE", str(noise))
    files = {"silent": caller,
             "held": caller.replace("sip:ivr@", f"sip:{HOLD_EXTEN}@").replace(
                 f"{SILENT_FROM}[call_number]", f"{HELD_FROM}[call_number]"),
             "agents": AGENT_SCENARIO.read_text().replace("VOICE_FILE", str(noise))}
    out = {}
    for name, text in files.items():
        out[name] = tmp / f"{name}.xml"
        out[name].write_text(text)
    return out


async def run_n(sw: Any, n: int, held: int, rate: float, tmp: Path, *, rounds: int = 2,
                timing: HoldTiming = SHIPPED_HOLD) -> dict[str, Any]:
    """N silent SIP callers at a time, ``rounds`` x N in all; ``held`` SIP holds on
    ``timing``; as many app_queue baseline callers."""
    scenarios = scenario_files(sw, tmp)
    sessions = n + 2 * held + 50  # silent + held callers + baseline, and room for the ramp
    proc, _http, _cfg = start_controller(sw, tmp, timing, agi_sessions=sessions)
    usage, ast = Usage(proc.pid), Usage(sw.pid() or 0)
    rec: Recorder | None = None
    sipps: dict[str, subprocess.Popen[bytes]] = {}
    commands: dict[str, str] = {}
    try:
        await wait_healthy(_http, proc)
        rec = await Recorder(sw.ports.ami, sw.secrets().admin).connect()
        await add_baseline_dialplan(rec)
        sampling = Sampling(usage, ast, others={
            k: (lambda k=k: sipps[k].pid if k in sipps and sipps[k].poll() is None else None)
            for k in ("silent", "held", "agents")}).start()
        failures: list[str] = []
        t_start = time.monotonic()
        await queue_callers(rec, held)

        def launch(name: str, command: list[str]) -> None:
            commands[name] = " ".join(command)
            # A blocking Popen in a coroutine, like the controller's: it returns at once.
            sipps[name] = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)

        agents = sipp_command(sw, scenarios["agents"], held, held, rate, tmp, media=SIPP_MEDIA["agents"],
                              name="agents", uas=True, extra=(
                                  "-set", "ring_ms", "500", "-set", "hold_ms", str(int(HOLD_AFTER * 1000)),
                                  "-set", "unhold_ms", str(int(timing.hold_for * 1000)),
                                  "-set", "bye_ms", str(int(BYE_AFTER * 1000))))
        launch("agents", agents)
        agent_port = agents[agents.index("-p") + 1]
        await rec.add_dialplan("ivr-inbound", HOLD_EXTEN, [
            f"Dial(PJSIP/anonymous/sip:agent@127.0.0.1:{agent_port})", "Hangup()"])
        launch("held", sipp_command(sw, scenarios["held"], held, held, rate, tmp, media=SIPP_MEDIA["held"],
                                    name="held"))
        launch("silent", sipp_command(sw, scenarios["silent"], n, rounds * n, rate, tmp, name="silent"))
        while any(p.poll() is None for p in sipps.values()) and time.monotonic() - t_start < 240:
            await asyncio.sleep(0.5)  # the SIPp runs end with their calls; bounded
        for name, p in sipps.items():
            if p.poll() is None:
                failures.append(f"SIPp {name} still running after 240 s")
                p.send_signal(signal.SIGUSR1)  # ask it to stop placing calls
        await asyncio.sleep(4)  # the last thanks and announcements
        cpu_end, ast_end = usage.samples[-1][1], ast.samples[-1][1]
        refused = await agi_refused(_http)
        await rec.hang_up_all()
        await rec.hang_up_all(SIP_CHANNEL)
        await sampling.stop()
        duration = time.monotonic() - t_start
        result = analyse_sip(rec.events, timing)
        cpu = cpu_end - usage.samples[0][1]
        ast_cpu = ast_end - ast.samples[0][1]
        errors = {}
        for name in sipps:
            log = tmp / f"{name}_errors.log"
            errors[name] = log.read_text(errors="replace")[-600:] if log.exists() else ""
        result.update({
            "n": n, "sip_calls_planned": rounds * n, "held_calls": held, "baseline_callers": held,
            "sipp_returncodes": {k: p.returncode for k, p in sipps.items()}, "sipp_errors_tail": errors,
            "sipp_commands": commands, "duration_s": round(duration, 1), "failures": failures[:20],
            "controller_cpu_pct_avg": round(100 * cpu / duration, 1),
            "asterisk_cpu_pct_avg": round(100 * ast_cpu / duration, 1),
            "sipp_cpu_pct_avg": round(100 * sum(sampling.cpu.values()) / duration, 1),
            "controller_share_of_asterisk_pct": round(100 * cpu / ast_cpu, 1) if ast_cpu else None,
            "agi_commands_per_s": round(result["agi_commands"] / duration, 1),
            "agi_max_sessions": sessions, "agi_refused": refused,
            **controller_log_figures(tmp / "controller.log"),
        })
        return result
    finally:
        for p in sipps.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if rec is not None:
            rec.close()
        stop_controller(proc)


def verdict(r: dict[str, Any]) -> bool:
    """Pause and reminder p99 within 150 ms and within app_queue's own reminder error."""
    base = r["baseline_error"].get("p99_ms")
    limit = min(150.0, base) if base is not None else 150.0
    p, m = r["pause_error"].get("p99_ms"), r["reminder_error"].get("p99_ms")
    ok_calls = r["sip_calls_with_three_pauses"] >= 0.95 * r["sip_calls_planned"]
    ok_holds = r["sip_holds_resumed"] >= 0.95 * r["held_calls"]
    return p is not None and m is not None and p <= limit and m <= limit and ok_calls and ok_holds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="N concurrent SIP callers (SIPp, real RTP) through the trunk")
    p.add_argument("--n", type=int, nargs="*", default=[100, 200, 300])
    p.add_argument("--quick", action="store_true", help="N = 20 only")
    p.add_argument("--rate", type=float, default=50.0, help="new SIP calls per second while ramping up")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--note", default="", help="what else ran on the machine (saved in the JSON)")
    p.add_argument("--name", default="", help="results file bench/results/NAME.json (default sip_calls, "
                   "sip_calls_quick with --quick)")
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
        rows.append([
            r["n"], f'{r["sip_calls_with_three_pauses"]}/{r["sip_calls_planned"]}',
            f'{r["sip_holds_resumed"]}/{r["held_calls"]}',
            spread(r["pause_error"]), spread(r["reminder_error"]), spread(r["baseline_error"]),
            spread(r["agi_round_trip"], "p50_ms", "p99_ms"),
            r["controller_cpu_pct_avg"], r["asterisk_cpu_pct_avg"], r["sipp_cpu_pct_avg"],
            r["controller_share_of_asterisk_pct"], "yes" if r["meets_target"] else "no",
        ])
    print(table(["N SIP", "calls full script/planned", "SIP holds resumed/planned", "pause err ms p50/p99/max",
                 "reminder err ms p50/p99/max", "app_queue err ms p50/p99/max", "AGI rtt ms p50/p99",
                 "ctl CPU %", "Asterisk CPU %", "SIPp CPU %", "ctl/Asterisk CPU %", "p99 <= 150 and <= app_queue"],
                rows))
    good = [r["n"] for r in runs if r["meets_target"]]
    print(f"largest N meeting the target in this run: {max(good) if good else 'none'}")
    if not args.no_save:
        name = args.name or ("sip_calls_quick" if args.quick else "sip_calls")
        targets = {"p99_ms": 150, "vs_baseline": 1.0}
        print(f"-> {write_results(name, {'runs': runs, 'note': args.note, 'targets': targets})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
