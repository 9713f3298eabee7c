"""The one-send claims (ivr.once) against a real PostgreSQL: claims/s and latency with one
connection against a pool, with and without an added round-trip delay.

A throwaway PostgreSQL (tests/pgserver.py, Unix socket only) is reached through a small
TCP proxy on 127.0.0.1 that holds every chunk ``delay / 2`` ms in each direction, so each
round trip costs ``delay`` ms more, as a database on another host does; throughput is not
limited. The node holds the lease (ivr.cluster.Lease, through the same proxy) and claims
fresh keys:

* closed loop: ``--workers`` tasks claim back to back for ``--seconds`` (the most the
  claims can do);
* open loop: claims due at ``--rate`` per second for ``--seconds`` (a busy switch: hundreds
  of held callers, a reminder every 30 s each, plus alarms), each sent when the claim
  comes back or when ``claim_timeout`` (1 s) runs out (``unrecorded``).

    nice -n 10 python bench/claims.py            # delay 0 and 5 ms; 1, 4 and 8 connections
    python bench/claims.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from common import percentile, table, write_results

from ivr.cluster import Lease
from ivr.once import Once
from tests.pgserver import postgres_server

FAST: dict[str, Any] = {"ttl": 2.0, "renew_interval": 0.3, "poll_interval": 0.2, "margin": 0.3}
_switches = itertools.count()


class DelayProxy:
    """127.0.0.1:<port> to a Unix socket; each chunk is held ``delay / 2`` s each way."""

    def __init__(self, socket_path: str, delay: float) -> None:
        self.socket_path, self.half = socket_path, delay / 2
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            for coro in (self._read(src, queue), self._write(queue, dst)):
                task = asyncio.ensure_future(coro)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read(self, src: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await src.read(65536):
                queue.put_nowait((loop.time() + self.half, chunk))
        except ConnectionError:
            pass  # the other side went away (a pool closed at the end of a case)
        queue.put_nowait((loop.time() + self.half, b""))

    async def _write(self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, chunk = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not chunk:
                dst.close()
                return
            try:
                dst.write(chunk)
                await dst.drain()
            except ConnectionError:
                return


async def run_case(url: str, connections: int, *, workers: int, seconds: float, rate: float) -> dict[str, Any]:
    """One pool size: the closed loop, then the open loop; latencies in ms."""
    lease = Lease(url, node="bench", switch=f"bench-{next(_switches)}", **FAST)
    await lease.start()
    await lease.wait_role("leader", 10)
    once = Once(lease, url, connections=connections, claim_timeout=1.0)
    keys = itertools.count()
    try:
        for _ in range(connections):  # open the pool's connections before timing
            await asyncio.gather(*(once.run(f"warm/{next(keys)}", _noop) for _ in range(connections)))
        closed = await _closed_loop(once, keys, workers, seconds)
        opened = await _open_loop(once, keys, rate, seconds)
    finally:
        await once.close()
        await lease.close()
    return {"connections": connections, "closed": closed, "open": opened}


async def _closed_loop(once: Once, keys: Any, workers: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            outcomes[await once.run(f"closed/{next(keys)}", _noop)] += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return _figures(latencies, outcomes, time.perf_counter() - t0)


async def _open_loop(once: Once, keys: Any, rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()

    async def one(due: float) -> None:
        outcome = await once.run(f"open/{next(keys)}", _noop)
        latencies.append(time.perf_counter() - due)  # from when it fell due to when it was sent
        outcomes[outcome] += 1

    tasks, start, n = [], time.perf_counter(), int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    return _figures(latencies, outcomes, time.perf_counter() - start) | {"offered_per_s": rate}


def _figures(latencies: list[float], outcomes: Counter[str], elapsed: float) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {"claims": len(ms), "per_s": round(len(ms) / elapsed, 1), "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2) if ms else None,
            "outcomes": dict(outcomes)}


def _noop() -> None:
    return None


async def run(delays_ms: list[float], pools: list[int], *, workers: int, seconds: float, rate: float,
              socket_path: str) -> list[dict[str, Any]]:
    rows = []
    for delay in delays_ms:
        proxy = DelayProxy(socket_path, delay / 1000)
        await proxy.start()
        try:
            url = f"postgresql://ivr@127.0.0.1:{proxy.port}/postgres"
            for n in pools:
                rows.append({"delay_ms": delay, **await run_case(url, n, workers=workers, seconds=seconds,
                                                                 rate=rate)})
        finally:
            await proxy.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--delays", default="0,5", help="added round trip, ms, comma-separated")
    p.add_argument("--pools", default="1,4,8", help="claim_connections values")
    p.add_argument("--workers", type=int, default=64, help="closed loop: claims in flight")
    p.add_argument("--rate", type=float, default=400.0, help="open loop: claims due per second")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="1 s per case")
    args = p.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    with postgres_server() as base:
        socket_dir = base.split("host=", 1)[1]
        rows = asyncio.run(run([float(x) for x in args.delays.split(",")], [int(x) for x in args.pools.split(",")],
                               workers=args.workers, seconds=seconds, rate=args.rate,
                               socket_path=f"{socket_dir}/.s.PGSQL.5432"))
    print(table(["added RTT ms", "connections", "closed: claims/s", "p50 ms", "p99 ms",
                 f"open {args.rate:g}/s: p50 ms", "p99 ms", "max ms", "unrecorded"],
                [(r["delay_ms"], r["connections"], r["closed"]["per_s"], r["closed"]["p50_ms"],
                  r["closed"]["p99_ms"], r["open"]["p50_ms"], r["open"]["p99_ms"], r["open"]["max_ms"],
                  r["open"]["outcomes"].get("unrecorded", 0) + r["closed"]["outcomes"].get("unrecorded", 0))
                 for r in rows]))
    path = write_results("claims", {"workers": args.workers, "seconds": seconds, "rate": args.rate,
                                    "claim_timeout_s": 1.0, "rows": rows}, with_asterisk=False)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
