"""A fake Asterisk for FastAGI tests: the environment exactly as Asterisk 22 writes it
(captured from the embedded switch: res_agi.c order, one ``%s\\n`` per value), and a client
that plays the switch's side of a session (answers the controller's sync probe, then
replies to commands from a script).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from ivr.agi.channel import KEY_PARAM


def environment(script: str = "inbound", key: str | None = None, *, args: tuple[str, ...] = (),
                port: int = 4573, **values: str) -> dict[str, str]:
    """The real environment of one session, in Asterisk's order (``values`` override a
    field by its name without ``agi_``: ``callerid="13800"``)."""
    if key is not None:
        script = f"{script}?{KEY_PARAM}={key}"
    env = {
        "agi_network": "yes", "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": "PJSIP/anonymous-00000001", "agi_language": "en", "agi_type": "PJSIP",
        "agi_uniqueid": "1796115316.0", "agi_version": "22.10.1+dfsg+~cs6.17.60671434-1",
        "agi_callerid": "13800138000", "agi_calleridname": "Bob", "agi_callingpres": "0",
        "agi_callingani2": "0", "agi_callington": "0", "agi_callingtns": "0",
        "agi_dnid": "unknown", "agi_rdnis": "unknown", "agi_context": "ivr-inbound",
        "agi_extension": "s", "agi_priority": "3", "agi_enhanced": "0.0", "agi_accountcode": "",
        "agi_threadid": "140682124089024",
    }
    for name, value in values.items():
        env[f"agi_{name}"] = value
    for i, arg in enumerate(args, 1):
        env[f"agi_arg_{i}"] = arg
    return env


def wire(env: dict[str, str]) -> bytes:
    """What Asterisk writes: each value raw after ``key: ``, then an empty line."""
    return ("".join(f"{k}: {v}\n" for k, v in env.items()) + "\n").encode()


Replies = Callable[[str], str]


def default_replies(command: str) -> str:
    return "200 result=0"


async def play_switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, env: dict[str, str],
                      replies: Replies = default_replies, commands: list[str] | None = None) -> list[str]:
    """Send ``env``, answer the sync probe as Asterisk does, then reply to every command
    with ``replies(command)`` until the controller closes; returns the commands seen."""
    seen = commands if commands is not None else []
    writer.write(wire(env))
    await writer.drain()
    while line := await reader.readline():
        command = line.decode().rstrip("\n")
        seen.append(command)
        m = re.fullmatch(r"GET FULL VARIABLE (ivrsync-[0-9a-f]+)", command)
        writer.write(f"{f'200 result=1 ({m.group(1)})' if m else replies(command)}\n".encode())
        await writer.drain()
    writer.close()
    return seen


async def session(port: int, env: dict[str, str], replies: Replies = default_replies,
                  host: str = "127.0.0.1") -> list[str]:
    reader, writer = await asyncio.open_connection(host, port)
    return await play_switch(reader, writer, env, replies)
