"""Concurrent calls on the real embedded switch: timer accuracy, AGI latency, controller
CPU and memory per call, side by side with Asterisk's own periodic announcements.

    python bench/concurrent_calls.py --quick        # N = 20, about 80 s
    nice -n 10 python bench/concurrent_calls.py     # N = 50, 100, 200, about 5 min

For each N, in one run (a fresh controller process ``ivr run --config ...`` each time,
one embedded Asterisk on free loopback ports for all):

* **silent callers**: N slots, each placing a Local-channel call into ``ivr-inbound``
  whose caller side stays silent (``Answer``, ``Wait``), then the next call when it is
  released: greeting, three prompts, three 5 s pauses, release. New calls start while the
  held calls below are on hold, so the reminders fall under load.
* **held calls**: H = max(10, N/4) caller/agent pairs (Local channels, ``Dial``), put on
  hold through the controller's HTTP API (``POST /api/calls/{id}/hold``), resumed after
  65 s: reminder at 30 s, choices at 60 s, timed by the controller.
* **speaking callers**: S = max(5, N/10) slots whose caller side plays
  ``ivr-test/caller_speech`` so that the speech starts 0.5-3.7 s into pause 1: the
  controller hears it (``TALK_DETECT``), wakes the flow's one long ``WAIT FOR DIGIT``
  (AMI ``PlayDTMF``) and hands the caller on. New calls until the same 42 s.
* **baseline**: H callers in queue ``bench-baseline`` (settings of the shipped ``support``
  queue: no members, ``periodic-announce-frequency = 30``; music = silence, see
  ``common.BENCH_CONFIG``): Asterisk's own 30 s reminder. The announcement is heard on
  the caller's side of the Local channel by ``TALK_DETECT`` (the first one therefore
  includes the detector's 20-40 ms and the file's lead-in; the spacing between two does not).

Figures, all from Asterisk's own AMI event timestamps (admin connection, event filter):

* pause error: ``AGIExecEnd`` of a prompt's ``STREAM FILE`` -> ``AGIExecStart`` of the
  controller's next action (``EXEC UserEvent IvrSilentCall``) minus the 5 s pause;
* reminder error: ``UserEvent IvrHold State: start`` -> ``AGIExecStart`` of ``STREAM FILE
  .../hold_reminder`` minus 30 s, and of ``hold_choices`` minus 60 s;
* baseline error: queue join (``QueueCallerJoin``) or the previous announcement ->
  ``ChannelTalkingStart`` of the next announcement, minus 30 s;
* AGI round trip: ``AGIExecEnd`` of one command -> ``AGIExecEnd`` of the next, quick
  command (SET/GET VARIABLE, EXEC UserEvent, ANSWER) of the same call: reply to the
  controller, its processing, its next command and Asterisk's execution; turnaround:
  ``AGIExecEnd`` -> next ``AGIExecStart``;
* speech hand-on (speaking callers heard in a pause): ``ChannelTalkingStart`` on the
  inbound channel -> ``AGIExecEnd`` of the woken ``WAIT FOR DIGIT`` (wake) and ->
  ``UserEvent IvrSilentCall Stage: responded`` (hand-on);
* AGI commands per second: every ``AGIExecStart`` over the run's length;
* controller CPU (utime+stime) and RSS from /proc/<pid>, sampled every second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callbench import (
    HOLD_FOR,
    TOKEN,
    Recorder,
    Sampling,
    Usage,
    _ts,
    add_baseline_dialplan,
    agi_by_channel,
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
from common import (
    ROOT,
    add_transmit_silence_option,
    spread,
    start_switch,
    stop_switch,
    summary_ms,
    table,
    write_results,
)

NEW_CALLS_UNTIL = 42.0  # s after the holds start: the last silent calls end after the choices


# -- analysis (pure: events are dicts as AMI sent them; the shared parts in callbench.py) --
def speech_latency(events: list[dict[str, Any]], agi: dict[str, list[dict[str, Any]]],
                   marker: str = "@bench-speaks-") -> dict[str, list[float]]:
    """Speaking callers heard in a pause: ChannelTalkingStart -> the end of the woken
    WAIT FOR DIGIT, and -> the responded UserEvent."""
    talking: dict[str, float] = {}
    responded: dict[str, float] = {}
    for e in events:
        chan = e.get("Channel", "")
        if marker not in chan or not chan.endswith(";1"):
            continue
        if e.get("Event") == "ChannelTalkingStart":
            talking.setdefault(chan, _ts(e))
        elif (e.get("Event") == "UserEvent" and e.get("UserEvent") == "IvrSilentCall"
              and e.get("Stage") == "responded" and e.get("From", "").startswith("pause")):
            responded[chan] = _ts(e)
    out: dict[str, list[float]] = {"wake": [], "hand_on": []}
    for chan, t_resp in responded.items():
        t_talk = talking.get(chan)
        if t_talk is None:
            continue
        out["hand_on"].append(t_resp - t_talk)
        ends = [_ts(e) for e in agi.get(chan, []) if e["Event"] == "AGIExecEnd"
                and e.get("Command", "").startswith("WAIT FOR DIGIT") and t_talk <= _ts(e) <= t_resp]
        if ends:
            out["wake"].append(ends[0] - t_talk)
    return out



def analyse(events: list[dict[str, Any]]) -> dict[str, Any]:
    agi = agi_by_channel(events)
    base = baseline_errors(events)
    speech = speech_latency(events, agi)
    return {
        **call_figures(agi, pause_errors(agi), hold_errors(events, agi), base),
        "baseline_first": summary_ms(base["first"]), "baseline_spacing": summary_ms(base["spacing"]),
        "speech_wake": summary_ms(speech["wake"]), "speech_hand_on": summary_ms(speech["hand_on"]),
        "silent_calls": sum(1 for c, evs in agi.items() if "@bench-silent-" in c),
        "speaking_calls": sum(1 for c in agi if "@bench-speaks-" in c),
    }



# -- the run --------------------------------------------------------------------------
SPEECH_ONSET = 1.0  # ivr-test/caller_speech starts with 1 s of digital silence


def greeting_seconds(cfg: Path) -> float:
    """How long the greeting the controller will choose now plays (to time the speakers)."""
    from ivr.config import load_config
    from ivr.greeting import choose_greeting
    from ivr.prompts import prompt_duration

    config = load_config(cfg, env={})
    greeting = choose_greeting(datetime.now(ZoneInfo(config.switch.timezone)), config)
    # (empty: the built prompts the switch plays, which start_switch builds into prompts/build)
    build = ROOT / (config.prompts.build or "prompts/build")
    return sum(prompt_duration(build, greeting.language, p) for p in greeting.prompts)


async def add_dialplan(rec: Recorder, greeting: float) -> None:
    await rec.add_dialplan("bench-silent", "_s.", ["Answer()", "Wait(90)", "Hangup()"])
    for j in range(5):  # speech 0.5, 1.3, 2.1, 2.9, 3.7 s into pause 1
        wait = greeting + 0.5 + 0.8 * j - SPEECH_ONSET
        await rec.add_dialplan("bench-speaks", f"_p{j}.", [
            "Answer()", f"Wait({wait:.3f})", "Playback(ivr-test/caller_speech)", "Hangup()"])
    await rec.add_dialplan("bench-hold-caller", "_c.", ["Answer()", "Wait(300)", "Hangup()"])
    await rec.add_dialplan("bench-hold-dial", "_d.", ["Dial(Local/a${EXTEN:1}@bench-hold-agent/n)", "Hangup()"])
    await rec.add_dialplan("bench-hold-agent", "_a.", ["Answer()", "Wait(300)", "Hangup()"])
    await add_baseline_dialplan(rec)


async def run_n(sw: Any, n: int, held: int, rate: float, tmp: Path) -> dict[str, Any]:
    speakers = max(5, n // 10)
    import aiohttp

    proc, http, cfg = start_controller(sw, tmp)
    usage = Usage(proc.pid)
    ast = Usage(sw.pid() or 0)
    rec: Recorder | None = None
    try:
        await wait_healthy(http, proc)
        rec = await Recorder(sw.ports.ami, sw.secrets().admin).connect()
        await add_dialplan(rec, greeting_seconds(cfg))
        sampling = Sampling(usage, ast).start()
        idle_rss = usage.samples[-1][2]
        api = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        t_start = time.monotonic()
        active = [0]
        peak = [0]
        placed = [0]
        failures: list[str] = []

        async def held_call(i: int) -> None:
            bridged = rec.expect_bridge(f"Local/c{i}")
            await rec.originate(f"Local/c{i}@bench-hold-caller/n", "bench-hold-dial", f"d{i}", f"1390000{i:04d}")
            entered = await asyncio.wait_for(bridged, 15)
            call_id = entered["Linkedid"]
            for _ in range(50):  # the controller may not have seen the bridge yet
                async with api.post(f"http://127.0.0.1:{http}/api/calls/{call_id}/hold") as r:
                    if r.status == 200:
                        break
                    body = await r.text()
                await asyncio.sleep(0.1)
            else:
                failures.append(f"hold {call_id}: {body}")
                return
            t_hold = time.monotonic()
            await asyncio.sleep(max(0.0, t_hold + HOLD_FOR - time.monotonic()))
            async with api.post(f"http://127.0.0.1:{http}/api/calls/{call_id}/resume") as r:
                if r.status != 200:
                    failures.append(f"resume {call_id}: {await r.text()}")

        async def call_slot(i: int, speaks: bool = False) -> None:
            await asyncio.sleep(i / rate)
            k = 0
            while time.monotonic() - t_start < NEW_CALLS_UNTIL:
                key = f"Local/p{i % 5}{i}x{k}" if speaks else f"Local/s{i}x{k}"
                gone = rec.expect_hangup(key)
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                placed[0] += 1
                context = "bench-speaks" if speaks else "bench-silent"
                await rec.originate(f"{key}@{context}/n", "ivr-inbound", "s", f"138{int(speaks)}{i:03d}{k:03d}")
                try:
                    await asyncio.wait_for(gone, 60)
                except TimeoutError:
                    failures.append(f"call {key} not ended within 60 s")
                finally:
                    active[0] -= 1
                k += 1

        await queue_callers(rec, held)
        holds = asyncio.gather(*(held_call(i) for i in range(held)))
        await asyncio.gather(*(call_slot(i) for i in range(n)),
                             *(call_slot(i, speaks=True) for i in range(speakers)))
        await holds
        await asyncio.sleep(max(0.0, t_start + HOLD_FOR + 4 - time.monotonic()))  # thanks, last announcement
        cpu_end = usage.samples[-1][1] if usage.samples else 0.0
        await rec.hang_up_all()
        await api.close()
        await sampling.stop()
        duration = time.monotonic() - t_start
        result = analyse(rec.events)
        cpu = cpu_end - usage.samples[0][1]
        peak_rss = max(s[2] for s in usage.samples)
        ast_cpu = ast.samples[-1][1] - ast.samples[0][1] if len(ast.samples) > 1 else 0.0
        concurrent = peak[0] + 2 * held
        result.update({
            "n": n, "speaking_slots": speakers, "held_calls": held, "baseline_callers": held,
            "calls_placed": placed[0], "agi_commands_per_s": round(result["agi_commands"] / duration, 1),
            "peak_inbound_concurrent": peak[0], "duration_s": round(duration, 1), "failures": failures[:20],
            "controller": {
                "cpu_s": round(cpu, 2), "cpu_pct_avg": round(100 * cpu / duration, 1),
                "cpu_ms_per_call": round(1000 * cpu / max(placed[0] + held, 1), 1),
                "rss_idle_mb": round(idle_rss / 1024, 1), "rss_peak_mb": round(peak_rss / 1024, 1),
                "rss_kb_per_concurrent_call": round((peak_rss - idle_rss) / max(peak[0] + held, 1), 1),
            },
            "asterisk_cpu_pct_avg": round(100 * ast_cpu / duration, 1),
            "concurrent_channels_approx": concurrent, **controller_log_figures(tmp / "controller.log"),
        })
        return result
    finally:
        if rec is not None:
            rec.close()
        stop_controller(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="concurrent calls on the real switch vs. app_queue's own reminders")
    p.add_argument("--n", type=int, nargs="*", default=[50, 100, 200])
    p.add_argument("--quick", action="store_true", help="N = 20 only")
    p.add_argument("--rate", type=float, default=50.0, help="new silent calls per second while ramping up")
    shipped = add_transmit_silence_option(p)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    ns = [20] if args.quick else args.n
    sw = start_switch(f"bench-cc-{os.getpid()}", transmit_silence=args.transmit_silence)
    transmit_silence = args.transmit_silence or shipped  # what this run measures
    runs = []
    try:
        for n in ns:
            with tempfile.TemporaryDirectory(prefix="ivr-bench-cc-") as tmp:
                held = max(10, n // 4)
                print(f"N={n}: {held} held calls, {held} baseline queue callers ...", flush=True)
                result = asyncio.run(run_n(sw, n, held, args.rate, Path(tmp)))
                runs.append(result)
                if result["failures"]:
                    print("  failures:", *result["failures"], sep="\n    ")
    finally:
        stop_switch(sw)
    rows = []
    for r in runs:
        c = r["controller"]
        rows.append([
            r["n"], r["calls_placed"], r["held_calls"],
            spread(r["pause_error"]),
            spread(r["reminder_error"]),
            spread(r["baseline_error"]),
            spread(r["agi_round_trip"], "p50_ms", "p99_ms"), r["agi_commands_per_s"],
            spread(r["speech_hand_on"]),
            c["cpu_pct_avg"], c["cpu_ms_per_call"], c["rss_kb_per_concurrent_call"], r["asterisk_cpu_pct_avg"],
        ])
    print(table(["N", "calls (silent+speaking)", "held", "pause err ms p50/p99/max", "reminder err ms p50/p99/max",
                 "app_queue err ms p50/p99/max", "AGI rtt ms p50/p99", "AGI cmd/s",
                 "speech->hand-on ms p50/p99/max", "ctl CPU %", "ctl CPU ms/call",
                 "ctl RSS kB/call", "Asterisk CPU %"], rows))
    if not args.no_save:
        name = "concurrent_calls_quick" if args.quick else "concurrent_calls"
        name += "_no_transmit_silence" if transmit_silence == "no" else ""
        results = {"runs": runs, "transmit_silence": transmit_silence == "yes",
                   "targets": {"p99_ms_at_200": 250, "vs_baseline": 1.5}}
        print(f"-> {write_results(name, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
