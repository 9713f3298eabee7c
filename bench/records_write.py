"""The records writer: events/s and per-event apply latency of ``CallStore.apply`` (one
transaction each, as the recorder writes them), on SQLite and PostgreSQL, for typical calls
and for the worst case of the order-independent spans (records/spans.py): a queue call
that rings 30 members in 5 rounds (300 ring events) and holds three times.

Two workloads, each a set of calls whose events are merged by time and applied one by one
in that order (the recorder's order when nothing is late):

* ``typical``: 200 calls of 20 events (arrival, greeting, silent stages, two ring legs and
  an alarm, a hold with a reminder and choices, a transfer, the unclear line, hang-ups, the
  end);
* ``queue``: 10 calls, each 30 members rung in 5 rounds (``ring.started`` then
  ``ring.noanswer`` per member per round, the last round answered by one), an alarm per
  member and round, then three holds (start, reminder, resume), the end: 463 events each.

Each code version (``VERSIONS``) runs in a child process of its own: ``before`` the
event-by-event appliers (the first parent of the merge that brought the order-independent
spans), ``rebuild`` that merge (every hold and ring event derives them all again),
``after`` this checkout's ``ivr/`` (one step for the latest event); the older ones are
exported with ``git archive`` to a temporary directory. SQLite: a file in ``--dir`` (WAL,
``synchronous = FULL``, as shipped); PostgreSQL: ``tests/pgserver.py`` on a Unix socket
with ``fsync`` on (its default for tests is off).

    nice -n 10 python bench/records_write.py          # three versions, both databases (~5 min)
    python bench/records_write.py --quick             # 20 typical calls, 2 queue calls
    python bench/records_write.py --versions rebuild,after --rounds 20 --typical 0 --queue 2 --name records_write_r20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, spread, summary_ms, table, write_results

# The code versions compared (labels, git revisions; None: this checkout's ivr/).
VERSIONS = {
    "before": "d5d71dc^1",  # int before 'Merge branch s-records': holds, transfers, legs edited event by event
    "rebuild": "d119875",  # s-records merged: every hold and ring event derives all of them again
    "after": None,  # records/steps.py: one step for the latest event, the full derivation when late or at the end
}
T0 = 1_760_000_000.0
MEMBERS, ROUNDS, RING_S, RETRY_S = 30, 5, 15.0, 5.0


def typical_call(n: int, t: float) -> list[tuple[str, str, float, dict[str, Any]]]:
    """One call of 20 events from ``t`` (kind, call id, at, data)."""
    c = f"bench-{n}.1"
    u1, u2 = f"{c}-L1", f"{c}-L2"
    return [
        ("call.started", c, t, {"caller": "555", "channel": "PJSIP/trunk-1"}),
        ("greeting.played", c, t + 0.5, {"greeting": "morning"}),
        ("silent.stage", c, t + 4, {"stage": "1"}),
        ("silent.stage", c, t + 5.5, {"stage": "speech"}),
        ("ring.started", c, t + 6, {"agent": "1001", "uniqueid": u1}),
        ("ring.alarm", c, t + 21, {"agent": "1001", "level": "warning", "rings": 3}),
        ("ring.noanswer", c, t + 21, {"agent": "1001", "uniqueid": u1, "rings": 3, "reason": "noanswer"}),
        ("ring.started", c, t + 21.1, {"agent": "1002", "uniqueid": u2}),
        ("ring.answered", c, t + 25, {"agent": "1002", "uniqueid": u2, "rings": 1, "within_three": True}),
        ("hold.start", c, t + 40, {"via": "key"}),
        ("hold.reminder", c, t + 70, {"count": 1}),
        ("hold.choice", c, t + 100, {"choice": "keep"}),  # the caller pressed 1 (the offer: choices_offered too)
        ("hold.resume", c, t + 104, {"held_seconds": 64.0}),
        ("transfer.state", c, t + 110, {"state": "offered", "target": "2001"}),
        ("transfer.state", c, t + 111, {"state": "ringing"}),
        ("transfer.state", c, t + 118, {"state": "completed"}),
        ("unclear.start", c, t + 120, {"reason": "faint"}),
        ("unclear.stage", c, t + 126, {"stage": "returned"}),
        ("call.hangup", c, t + 150, {"side": "caller", "cause": "16"}),
        ("call.ended", c, t + 150.01, {"hung_up_first": "caller", "cause": "16"}),
    ]


def queue_call(n: int, t: float, rounds: int = ROUNDS) -> list[tuple[str, str, float, dict[str, Any]]]:
    """A queue call ringing ``MEMBERS`` members in ``rounds`` rounds, then three holds."""
    c = f"bench-q{n}.1"
    out: list[tuple[str, str, float, dict[str, Any]]] = [
        ("call.started", c, t, {"caller": "556", "channel": "PJSIP/trunk-2"}),
        ("greeting.played", c, t + 0.5, {"greeting": "hello"})]
    at = t + 3.0
    for r in range(rounds):
        for m in range(MEMBERS):  # ringall: every member within a few ms
            out.append(("ring.started", c, at + m * 0.003, {"agent": f"{2000 + m}", "uniqueid": f"{c}-r{r}m{m}"}))
        for m in range(MEMBERS):
            out.append(("ring.alarm", c, at + 15 - 0.01 + m * 0.003, {"agent": f"{2000 + m}", "level": "warning",
                                                                      "rings": 3}))
        last = r == rounds - 1
        for m in range(MEMBERS):
            data: dict[str, Any] = {"agent": f"{2000 + m}", "uniqueid": f"{c}-r{r}m{m}", "rings": 3}
            if last and m == 0:
                out.append(("ring.answered", c, at + 14, {**data, "rings": 3, "within_three": True}))
            else:  # the answer ends the others' ringing at once in the last round
                out.append(("ring.noanswer", c, at + (14.001 if last else RING_S) + m * 0.003,
                            {**data, "reason": "answered-elsewhere" if last else "noanswer"}))
        at += RING_S + RETRY_S
    for h in range(3):
        start = at + 10 + h * 50
        out += [("hold.start", c, start, {"via": "key"}), ("hold.reminder", c, start + 30, {"count": 1}),
                ("hold.resume", c, start + 40, {"held_seconds": 40.0})]
    out += [("call.hangup", c, at + 200, {"side": "caller", "cause": "16"}),
            ("call.ended", c, at + 200.01, {"hung_up_first": "caller", "cause": "16"})]
    return out


def workload(name: str, calls: int, rounds: int = ROUNDS) -> list[tuple[str, str, float, dict[str, Any]]]:
    if name == "typical":
        events = [e for n in range(calls) for e in typical_call(n, T0 + n)]
    else:
        events = [e for n in range(calls) for e in queue_call(n, T0 + n * 7.0, rounds)]
    return sorted(events, key=lambda e: e[2])


# -- the child: one code version, one database ------------------------------------------

async def measure(url: str, events: list[tuple[str, str, float, dict[str, Any]]], rounds: int = ROUNDS,
                  ) -> dict[str, Any]:
    from ivr.events import CallEvent
    from ivr.records import CallStore

    store = await CallStore.open(url)
    lat: list[float] = []
    by_kind: dict[str, list[float]] = {}
    by_round: dict[str, list[float]] = {"first": [], "last": []}  # ring events of a queue call's 1st and last round
    seen: dict[str, int] = {}
    try:
        begun, cpu = time.perf_counter(), time.process_time()
        for kind, call_id, at, data in events:
            ev = CallEvent(kind, call_id, data, at=at)
            t = time.perf_counter()
            await store.apply(ev)
            dt = time.perf_counter() - t
            lat.append(dt)
            by_kind.setdefault(kind.split(".")[0], []).append(dt)
            if kind in ("ring.started", "ring.noanswer", "ring.answered"):
                i = seen[call_id] = seen.get(call_id, 0) + 1
                if i <= 2 * MEMBERS:
                    by_round["first"].append(dt)
                elif i > 2 * MEMBERS * (rounds - 1):
                    by_round["last"].append(dt)
        wall, cpu = time.perf_counter() - begun, time.process_time() - cpu
        sample = await store.call(events[-1][1])
        legs = len(sample["ring_legs"]) if sample else 0
    finally:
        await store.close()
    return {"events": len(events), "seconds": round(wall, 3), "events_per_s": round(len(events) / wall, 1),
            "apply": summary_ms(lat), "by_kind": {k: summary_ms(v) for k, v in sorted(by_kind.items())},
            "writer_cpu_ms_per_event": round(cpu * 1000 / len(events), 3),
            "ring_round_mean_ms": {k: round(sum(v) * 1000 / len(v), 2) if v else None for k, v in by_round.items()},
            "legs_of_last_call": legs}


async def child(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dbname in args.dbs.split(","):
        for name, calls in (("typical", args.typical), ("queue", args.queue)):
            if not calls:
                continue
            events = workload(name, calls, args.rounds)
            if dbname == "sqlite":
                with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                    result = await measure(f"sqlite:///{tmp}/ivr.db", events, args.rounds)
            else:
                from tests.pgserver import postgres_server, throwaway_database

                with postgres_server(fsync=True) as server:
                    async with throwaway_database(server, "bench") as url:
                        result = await measure(url, events, args.rounds)
            out[f"{dbname}/{name}"] = result
            print(f"  {args.label} {dbname}/{name}: {result['events_per_s']} events/s, "
                  f"p99 {result['apply']['p99_ms']} ms", file=sys.stderr, flush=True)
    return out


def export(rev: str, where: Path) -> str:
    """``ivr/`` of ``rev`` into ``where``; returns the commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "ivr"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return commit


def run_version(label: str, code: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--label", label, "--dbs", args.dbs, "--typical",
           str(args.typical), "--queue", str(args.queue), "--rounds", str(args.rounds), "--dir", args.dir]
    env = dict(os.environ)
    if code is not None:
        env["IVR_BENCH_CODE"] = str(code)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, check=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # after the store's log lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20 typical calls, 2 queue calls")
    p.add_argument("--versions", default=",".join(VERSIONS),
                   help="comma-separated, of: " + ", ".join(f"{k} ({v or 'this checkout'})"
                                                            for k, v in VERSIONS.items()))
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"a queue call's rounds (default {ROUNDS})")
    p.add_argument("--dbs", default="sqlite,postgresql")
    p.add_argument("--typical", type=int, default=200)
    p.add_argument("--queue", type=int, default=10)
    p.add_argument("--dir", default=str(Path(tempfile.gettempdir())), help="where the SQLite files go (a real disk)")
    p.add_argument("--name", default="records_write")
    p.add_argument("--note", default="")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--label", default="after", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.typical, args.queue = 20, 2
    if args.child:
        print(json.dumps(asyncio.run(child(args))))
        return
    versions: dict[str, Any] = {}
    for label in args.versions.split(","):
        rev = VERSIONS[label]
        if rev is None:
            versions[label] = {"commit": "this checkout", **run_version(label, None, args)}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            commit = export(rev, Path(tmp))
            versions[label] = {"commit": commit, **run_version(label, Path(tmp), args)}
    rows = []
    for case in versions[next(iter(versions))]:
        for label, result in versions.items():
            if case == "commit":
                continue
            r = result[case]
            rows.append([label, case, r["events"], r["events_per_s"], spread(r["apply"]),
                         r["writer_cpu_ms_per_event"], spread(r["by_kind"].get("ring", {}), "p50_ms", "p99_ms"),
                         "/".join(str(v) for v in r["ring_round_mean_ms"].values())])
    print(table(["code", "database/calls", "events", "events/s", "apply p50/p99/max ms", "writer CPU ms/event",
                 "ring p50/p99 ms", "ring mean ms round 1/last"], rows))
    path = write_results(args.name, {"note": args.note, "typical_calls": args.typical, "queue_calls": args.queue,
                                     "queue_call": {"members": MEMBERS, "rounds": args.rounds},
                                     "versions": versions}, with_asterisk=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    if os.environ.get("IVR_BENCH_CODE"):  # a child measuring another version of ivr/
        sys.path.insert(0, os.environ["IVR_BENCH_CODE"])
    main()
