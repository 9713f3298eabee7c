"""Connection bounds of both servers (issue 13, item 4): the caps fit under the fd limit,
failed accepts are reported once per interval, the HTTP site evicts idle connections."""

from __future__ import annotations

import asyncio

from aiohttp import web
from structlog.testing import capture_logs

from ivr.netlimits import AcceptFailures, CappedHttpSite, Throttled, fd_budget, split_agi
from tests import present
from tests.fakes import until


def test_caps_kept_when_they_fit_and_lowered_when_not():
    assert fd_budget(216, 64, limit=4096) == (216, 64)
    with capture_logs() as logs:
        agi, http = fd_budget(216, 64, limit=128)
    assert agi + http <= 128 - 48 and agi >= 2 * http - 1  # calls keep two thirds
    assert logs[0]["event"] == "net.caps_lowered" and logs[0]["fd_limit"] == 128


def test_fastagi_sockets_split_between_calls_and_headers_in_proportion():
    assert split_agi(328, 200, 128) == (200, 128)  # as configured when they fit
    # RLIMIT_NOFILE 128 leaves FastAGI 53: idle connections in their header get their share
    # only (a flood of them is evicted), calls keep the rest; never more than the budget.
    sessions, pending = split_agi(53, 200, 128)
    assert (sessions, pending) == (33, 20) and sessions + pending == 53
    assert split_agi(2, 200, 128) == (1, 1)


def test_accept_failures_are_folded_into_one_line_per_interval():
    now = [0.0]
    handler = AcceptFailures(interval=10.0, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    other: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: other.append(ctx))
    try:
        handler.install(loop)
        with capture_logs() as logs:
            for i in range(13_875):  # the count, in "10 s"
                now[0] = i * 10.0 / 13_875
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(24, "Too many open files")})
            now[0] = 10.0
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
            retry = loop.call_later(3600, loop._start_serving)  # type: ignore[attr-defined]  # asyncio's private retry, as in the issue
            loop.call_exception_handler({"message": "Exception in callback _start_serving", "handle": retry,
                                         "exception": ValueError("Invalid file descriptor: -1")})
            retry.cancel()
            loop.call_exception_handler({"message": "something else"})
        lines = [e for e in logs if e["event"] == "net.accept_failed"]
        assert len(lines) == 2 and lines[1]["count"] == 13_875 and lines[1]["total"] == 13_876
        assert handler.total == 13_877  # the failed retry counted, not logged
        assert other == [{"message": "something else"}]  # the rest goes to the previous handler
        handler.uninstall()
        assert loop.get_exception_handler() is not handler
    finally:
        loop.close()


def test_throttled_warnings():
    now = [0.0]
    t = Throttled(interval=5.0, clock=lambda: now[0])
    with capture_logs() as logs:
        assert t.warning("x", "a") and not t.warning("x", "a") and t.warning("x", "b")
        now[0] = 6.0
        assert t.warning("x", "a")
    assert [(e["reason"], e.get("also_since_last")) for e in logs] == [("a", None), ("b", None), ("a", 1)]


async def test_http_site_evicts_the_oldest_idle_connection_at_the_cap():
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, keepalive_timeout=30)
    await runner.setup()
    reasons: list[str] = []
    site = CappedHttpSite(runner, "127.0.0.1", 0, max_connections=3, on_refused=reasons.append)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await until(lambda: len(present(runner.server).connections) == 3, 2, "3 idle connections accepted")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(2):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            assert await idle[0][0].read() == b""  # the oldest idle one made room
        assert reasons == ["evicted"] and site.evicted == 1
        for _r, w in [*idle, (reader, writer)]:
            w.close()
    finally:
        await runner.cleanup()


async def test_http_slowloris_is_closed_at_the_keepalive_timeout():
    """A client dribbling its request line and headers a byte every 20 ms never completes
    a request: the server closes it once ``keepalive_timeout`` has passed (aiohttp starts
    that timer at connect), however steadily bytes arrive."""
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, keepalive_timeout=0.3)
    await runner.setup()
    site = CappedHttpSite(runner, "127.0.0.1", 0, max_connections=5)
    await site.start()
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        start = loop.time()
        async with asyncio.timeout(3):
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.02)  # pacing: a byte every 20 ms
        assert reader.at_eof() and 0.25 <= loop.time() - start < 1.5
        writer.close()
    finally:
        await runner.cleanup()
