"""One FastAGI session: send commands, read replies, and turn hang-ups into one exception.

panoramisk's ``Request.send_command`` crashes on an empty reply (EOF: ``int('')``) and
its ``Application.handler`` busy-loops when the peer closes before the headers end; this
module parses with panoramisk's ``parse_agi_result`` but owns the reading.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from panoramisk.utils import parse_agi_result

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 5.0


class AgiHangup(Exception):
    """The caller hung up (HANGUP, 511, result=-1 or the socket closed)."""


class AgiError(Exception):
    """Asterisk rejected a command (510 invalid, 520 usage) or sent garbage."""


@dataclass(frozen=True)
class AgiReply:
    code: int
    result: str
    data: str
    line: str

    @property
    def digit(self) -> str | None:
        """For WAIT FOR DIGIT / STREAM FILE: the DTMF digit pressed, if any."""
        try:
            value = int(self.result)
        except ValueError:
            return None
        return chr(value) if value > 0 else None


async def read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    """The ``agi_*`` variables Asterisk sends first, up to the blank line."""
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = await asyncio.wait_for(reader.readline(), HEADER_TIMEOUT)
        total += len(line)
        if not line:
            raise AgiError("connection closed before the AGI headers ended")
        if total > MAX_HEADER_BYTES:
            raise AgiError(f"AGI headers longer than {MAX_HEADER_BYTES} bytes")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            if not headers:
                raise AgiError("empty AGI request")
            return headers
        key, sep, value = text.partition(": ")
        if not sep or not key.startswith("agi_"):
            raise AgiError(f"malformed AGI header line: {text[:80]!r}")
        headers[key] = value


def parse_reply(line: str) -> AgiReply:
    """One AGI reply line; raises AgiHangup / AgiError."""
    if line == "HANGUP" or line.startswith("511"):
        raise AgiHangup(line)
    if not (len(line) >= 3 and line[:3].isascii() and line[:3].isdigit()):  # '¹' is a digit to isdigit()
        raise AgiError(f"malformed AGI reply: {line[:80]!r}")
    parsed = parse_agi_result(line)
    error = parsed.get("error")
    if error in ("AGIResultHangup", "AGIAppError"):
        raise AgiHangup(line)
    if error:
        raise AgiError(f"{error}: {line}")
    result, data = parsed.get("result", ("", ""))
    return AgiReply(code=int(parsed["status_code"]), result=result, data=data or "", line=line)


class AgiChannel:
    """Commands on one call. Every method raises AgiHangup once the caller is gone."""

    def __init__(
        self, headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.headers = headers
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self.hung_up = False

    @property
    def uniqueid(self) -> str:
        return self.headers.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.headers.get("agi_channel", "")

    @property
    def caller(self) -> str:
        return self.headers.get("agi_callerid", "")

    @property
    def script(self) -> str:
        return self.headers.get("agi_network_script", "")

    async def command(self, text: str) -> AgiReply:
        if self.hung_up:
            raise AgiHangup("already hung up")
        if "\n" in text or "\r" in text:
            raise AgiError(f"AGI command contains a newline: {text!r}")
        async with self._lock:
            try:
                self._writer.write(text.encode() + b"\n")
                await self._writer.drain()
                while True:
                    raw = await self._reader.readline()
                    if not raw:
                        raise AgiHangup("AGI connection closed")
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("100"):
                        continue  # "100 result=0 Trying..."
                    if line.startswith("520-"):
                        # Multi-line usage error: read to "520 End of proper usage."
                        while raw and not raw.startswith(b"520 "):
                            raw = await self._reader.readline()
                        raise AgiError(f"usage error for {text.split()[0]!r}: {line}")
                    return parse_reply(line)
            except (ConnectionError, AgiHangup):
                self.hung_up = True
                raise AgiHangup(text) from None

    # --- the commands the flows use
    async def answer(self) -> None:
        await self.command("ANSWER")

    async def stream_file(self, prompt: str, escape_digits: str = "", offset: int | None = None) -> str | None:
        """Play one file (from sample ``offset``); returns the digit that interrupted it, if any."""
        tail = f" {offset}" if offset is not None else ""
        try:
            reply = await self.command(f'STREAM FILE {prompt} "{escape_digits}"{tail}')
        except AgiHangup:
            # result=-1 means "hung up" or "could not open the file": ask which.
            self.hung_up = False
            await self.command("CHANNEL STATUS")  # raises AgiHangup if gone
            raise AgiError(f"Asterisk could not play {prompt!r} (missing prompt?)") from None
        return reply.digit

    async def exec(self, app: str, args: str = "") -> AgiReply:
        return await self.command(f'EXEC {app} "{_quote(args)}"' if args else f"EXEC {app}")

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(f'SET VARIABLE {name} "{_quote(value)}"')

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command(f"GET VARIABLE {name}")
        return reply.data if reply.result == "1" else None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        return (await self.command(f"WAIT FOR DIGIT {timeout_ms}")).digit

    async def hangup(self) -> None:
        try:
            await self.command("HANGUP")
        except AgiHangup:
            pass

    def close(self) -> None:
        self._writer.close()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
