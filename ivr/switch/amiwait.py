"""Readiness: log in to AMI and wait for ``FullyBooted``, with bounded retries.

Deliberately tiny and independent of panoramisk: it runs before anything else is up,
and must fail with a clear reason (refused, bad secret, timeout) rather than retry
forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ivr.ami.connection import AmiUnsafeValue, check_action
from ivr.errors import SwitchError


async def _read_message(reader: asyncio.StreamReader) -> dict[str, str]:
    msg: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("AMI closed the connection")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            if msg:
                return msg
            continue
        key, _, value = text.partition(":")
        msg.setdefault(key.strip(), value.strip())


async def wait_fully_booted(
    host: str,
    port: int,
    username: str,
    secret: str,
    *,
    timeout: float = 30.0,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    try:  # the one other place that writes to AMI: the same rule as AmiConnection.action
        check_action({"Action": "Login", "Username": username, "Secret": secret})
    except AmiUnsafeValue as exc:
        raise SwitchError(str(exc)) from exc
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not alive():
            raise SwitchError("Asterisk exited while starting")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=max(0.1, deadline - time.monotonic())
            )
        except (TimeoutError, OSError) as exc:
            last_error = f"AMI {host}:{port} not accepting connections ({exc})"
            await asyncio.sleep(0.1)
            continue
        try:
            await asyncio.wait_for(reader.readline(), timeout=5)  # banner
            writer.write(
                f"Action: Login\r\nUsername: {username}\r\nSecret: {secret}\r\n"
                "Events: system\r\n\r\n".encode()
            )
            await writer.drain()
            while time.monotonic() < deadline:
                msg = await asyncio.wait_for(_read_message(reader), deadline - time.monotonic())
                if msg.get("Response") == "Error":
                    raise SwitchError(f"AMI login as {username!r} refused: {msg.get('Message')}")
                if msg.get("Event") == "FullyBooted":
                    return
        except (TimeoutError, OSError, ConnectionError) as exc:
            last_error = f"AMI {host}:{port}: {exc or type(exc).__name__}"
        finally:
            writer.close()
        await asyncio.sleep(0.1)
    raise SwitchError(f"Asterisk not fully booted within {timeout:.0f} s: {last_error}")
