"""One FastAGI session: send commands, read replies, and turn hang-ups into one exception.

panoramisk's ``Request.send_command`` crashes on an empty reply (EOF: ``int('')``) and
its ``Application.handler`` busy-loops when the peer closes before the headers end; this
module parses with panoramisk's ``parse_agi_result`` but owns the reading.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from panoramisk.utils import parse_agi_result

from ivr.sections import AgiConfig

MAX_HEADER_BYTES = 16 * 1024
# [agi] header_timeout: s for the whole environment (not per line: slowloris); idle_timeout:
# s a command may take beyond its own duration before the session is dropped.
HEADER_TIMEOUT, IDLE_TIMEOUT = AgiConfig().header_timeout, AgiConfig().idle_timeout
STREAM_MAX = 300.0  # s a STREAM FILE of one of the project's prompts may take at most
KEY_PARAM = "ivr_key"  # the query parameter of the AGI URI that carries the switch's key

# The environment Asterisk 22 writes, in its order (res/res_agi.c): launch_netscript() sends
# agi_network and agi_network_script (only if the URI has a path), then setup_env() the
# rest, then one agi_arg_N line per AGI() argument, then an empty line. Values are written
# raw with "%s\n": a line break in a value adds lines.
PREFIX = ("agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language",
          "agi_type", "agi_uniqueid", "agi_version")
CALLER = ("agi_callerid", "agi_calleridname", "agi_callingpres", "agi_callingani2",
          "agi_callington", "agi_callingtns", "agi_dnid", "agi_rdnis")
TAIL = ("agi_context", "agi_extension", "agi_priority", "agi_enhanced", "agi_accountcode",
        "agi_threadid")
ORDER = (*PREFIX, *CALLER, *TAIL)
# Values a caller can fill (number, name, dialled number, redirecting number) and the
# four signalling fields written between them: nothing the controller decides on is here.
CALLER_KEYS = frozenset(CALLER)
_ARG = re.compile(r"^agi_arg_(\d+): ")


class AgiHangup(Exception):
    """The caller hung up (HANGUP, 511, result=-1 or the socket closed)."""


class AgiError(Exception):
    """Asterisk rejected a command (510 invalid, 520 usage) or sent garbage."""


class AgiIdle(AgiError):
    """No reply to a command within its own duration plus the idle timeout."""


class AgiRefused(AgiError):
    """The peer did not prove it is our switch (no key, wrong key)."""


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


def parse_environment(lines: list[str]) -> dict[str, str]:
    """The ``agi_*`` environment from all its lines (the closing empty line removed),
    whatever the caller-controlled values hold.

    Only Asterisk's fixed order is trusted, never a line's look:

    * the prefix (``agi_network`` .. ``agi_version``, written before any caller data)
      must come first, line by line, each exactly once (first wins: an injected
      ``agi_channel:`` further down is text of a caller value);
    * the tail (``agi_context`` .. ``agi_threadid`` and the ``agi_arg_N``) is written after
      the last caller value, so it is the *last* run of those six lines followed only by
      ``agi_arg_1``, ``agi_arg_2``, ...; anything a caller wrote that looks like it comes
      earlier and is folded into that caller's value;
    * between them, the caller block: ``agi_callerid`` first, then the other seven keys in
      order; a line that is not the next expected key is folded (with its line break) into
      the current value. Which of the four caller values a forged line lands in cannot be
      known (caller data is ambiguous by nature); none of it can reach a prefix or tail key.

    Raises :class:`AgiError` when the lines cannot be Asterisk's.
    """
    if not lines:
        raise AgiError("empty AGI request")
    env: dict[str, str] = {}
    i = 0
    for key in PREFIX:
        if i < len(lines) and lines[i].startswith(key + ": "):
            env[key] = lines[i][len(key) + 2:]
            i += 1
        elif key != "agi_network_script":  # absent when the AGI URI has no path
            line = lines[i] if i < len(lines) else ""
            raise AgiError(f"malformed AGI header line: expected {key}, got {line[:80]!r}")
    # The tail: the last agi_threadid line after which only agi_arg_N lines (in order,
    # folded) follow, preceded by the five other tail keys.
    t = len(lines) - 1
    while t >= i:
        if lines[t].startswith("agi_threadid: ") and t - 5 >= i and all(
                lines[t - 5 + n].startswith(k + ": ") for n, k in enumerate(TAIL[:-1])):
            args = _args(lines[t + 1:])
            if args is not None:
                break
        t -= 1
    else:
        raise AgiError("malformed AGI environment: no agi_context .. agi_threadid block")
    for n, key in enumerate(TAIL):
        env[key] = lines[t - 5 + n][len(key) + 2:]
    # The caller block, in order, folding what is not the next key.
    block = lines[i:t - 5]
    if not block or not block[0].startswith("agi_callerid: "):
        raise AgiError(f"malformed AGI header line: expected agi_callerid, got {(block or [''])[0][:80]!r}")
    current, expect = "agi_callerid", 1
    env[current] = block[0][len(current) + 2:]
    for line in block[1:]:
        if expect < len(CALLER) and line.startswith(CALLER[expect] + ": "):
            current = CALLER[expect]
            env[current] = line[len(current) + 2:]
            expect += 1
        else:
            env[current] += "\n" + line
    if expect < len(CALLER):
        raise AgiError(f"malformed AGI environment: {CALLER[expect]} missing")
    env.update(args)
    return env


def _args(lines: list[str]) -> dict[str, str] | None:
    """``agi_arg_1``, ``agi_arg_2``, ... in order (a line that is not the next one is folded
    into the current value); None if the lines do not start with ``agi_arg_1``."""
    args: dict[str, str] = {}
    for line in lines:
        m = _ARG.match(line)
        if m and int(m.group(1)) == len(args) + 1:
            args[f"agi_arg_{len(args) + 1}"] = line[m.end():]
        elif args:
            last = f"agi_arg_{len(args)}"
            args[last] += "\n" + line
        else:
            return None
    return args


def script_key(script: str) -> tuple[str, str | None]:
    """``agi_network_script`` without the key parameter, and the key (None if absent)."""
    path, sep, query = script.partition("?")
    if not sep:
        return script, None
    params = parse_qsl(query, keep_blank_values=True)
    key = next((v for k, v in params if k == KEY_PARAM), None)
    rest = urlencode([(k, v) for k, v in params if k != KEY_PARAM])
    return (f"{path}?{rest}" if rest else path), key


def key_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def read_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None = None, *,
                       key: str | None = None, require_key: bool = False,
                       timeout: float = HEADER_TIMEOUT) -> dict[str, str]:
    """The ``agi_*`` environment, read within ``timeout`` s in all (one deadline for the
    whole header, so a peer dribbling bytes cannot hold a session).

    With ``require_key`` the session must carry ``key`` in its AGI URI
    (``?ivr_key=...``), compared in constant time; otherwise :class:`AgiRefused` is raised
    before anything is written. The key is removed from ``agi_network_script`` and
    ``agi_request`` so it is never logged.

    With a ``writer``, the true end of the environment is found without trusting any line
    of it: a ``GET FULL VARIABLE <nonce>`` is written once the prefix is read; Asterisk
    reads commands only after it wrote the whole environment, so its reply (``200
    result=1 (<nonce>)``, which no caller can predict) is the first line after the
    environment. Without a writer (tests of the parser alone) the environment ends at the
    first empty line after the tail keys.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _read(reader, writer, key, require_key)
    except TimeoutError:
        raise AgiError(f"AGI header not complete within {timeout} s") from None


async def _read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None,
                key: str | None, require_key: bool) -> dict[str, str]:
    total = 0

    async def line() -> str:
        nonlocal total
        raw = await reader.readline()
        total += len(raw)
        if not raw:
            raise AgiError("connection closed before the AGI headers ended")
        if total > MAX_HEADER_BYTES:
            raise AgiError(f"AGI headers longer than {MAX_HEADER_BYTES} bytes")
        return raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")

    lines: list[str] = []
    # The prefix up to agi_request first, line by line: no caller data can be in it.
    first = await line()
    if not first:
        raise AgiError("empty AGI request")
    for text in (first, await line()):
        lines.append(text)
        if not text.startswith(("agi_network: ", "agi_network_script: ", "agi_request: ")):
            raise AgiError(f"malformed AGI header line: {text[:80]!r}")
    if not lines[-1].startswith("agi_request: "):
        lines.append(await line())
    if not (lines[0].startswith("agi_network: ") and lines[-1].startswith("agi_request: ")):
        raise AgiError(f"malformed AGI header line: {lines[-1][:80]!r}")
    script = next((ln[len("agi_network_script: "):] for ln in lines
                   if ln.startswith("agi_network_script: ")), "")
    _, given = script_key(script)
    if require_key and (key is None or not key_matches(given, key)):
        raise AgiRefused("no FastAGI key configured on the controller" if key is None
                         else "missing FastAGI key (the AGI URI has no ?ivr_key=)" if given is None
                         else "empty FastAGI key (is ivr-agi-key.conf #included in [globals]?)" if not given
                         else "wrong FastAGI key")
    if writer is not None:
        nonce = f"ivrsync-{secrets.token_hex(8)}"
        writer.write(f"GET FULL VARIABLE {nonce}\n".encode())
        await writer.drain()
        end = f"200 result=1 ({nonce})"
        while (text := await line()) != end:
            lines.append(text)
        while lines and lines[-1] == "HANGUP":  # the channel hung up meanwhile: Asterisk says so
            lines.pop()
        if not lines or lines[-1] != "":
            raise AgiError("malformed AGI environment: no empty line before the first reply")
        lines.pop()
    else:
        while True:
            text = await line()
            if not text and _complete(lines):
                break
            lines.append(text)
    env = parse_environment(lines)
    for name in ("agi_network_script", "agi_request"):
        if name in env:
            env[name] = _without_key(env[name])
    return env


def _complete(lines: list[str]) -> bool:
    """Whether an empty line here can end the environment (parser-only mode)."""
    try:
        parse_environment(lines)
    except AgiError:
        return False
    return True


def _without_key(value: str) -> str:
    """A script or request URI without the key parameter (so it can be logged)."""
    return script_key(value)[0]


def own_duration(command: str) -> float:
    """How long ``command`` may legitimately take before its reply, in s: its own timeout
    for WAIT FOR DIGIT (-1 = forever, bounded at an hour), :data:`STREAM_MAX` for playing
    and applications, 0 for the rest (they answer at once)."""
    words = command.split()
    verb = " ".join(words[:3]).upper()
    if verb.startswith("WAIT FOR DIGIT"):
        try:
            ms = int(words[3])
        except (IndexError, ValueError):
            return 0.0
        return 3600.0 if ms < 0 else ms / 1000
    if verb.startswith(("STREAM FILE", "CONTROL STREAM", "EXEC", "GET DATA", "GET OPTION",
                        "RECORD FILE", "SAY ")):
        return STREAM_MAX
    return 0.0


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


class AgiChannel(Protocol):
    """What the features use of one call's FastAGI session (the signatures of their routes):
    :class:`FastAgiChannel` on the socket; the tests' in-memory fake (tests/fakes.py)."""

    headers: dict[str, str]
    hung_up: bool

    @property
    def uniqueid(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def caller(self) -> str: ...
    async def command(self, text: str, timeout: float | None = None) -> AgiReply: ...
    async def answer(self) -> None: ...
    async def stream_file(self, prompt: str, escape_digits: str = "", offset: int | None = None) -> str | None: ...
    async def exec(self, app: str, args: str = "", timeout: float | None = None) -> AgiReply: ...
    async def set_variable(self, name: str, value: str) -> None: ...
    async def get_variable(self, name: str) -> str | None: ...
    async def wait_for_digit(self, timeout_ms: int) -> str | None: ...
    async def hangup(self) -> None: ...


class FastAgiChannel:
    """Commands on one call over its FastAGI socket. Every method raises AgiHangup once the
    caller is gone."""

    def __init__(
        self, headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        *, idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.headers = headers
        self.idle_timeout = idle_timeout
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

    async def command(self, text: str, timeout: float | None = None) -> AgiReply:
        """Send one command and read its reply. The reply must come within the command's
        own duration (``timeout``, or what :func:`own_duration` knows of it) plus
        ``idle_timeout`` s; a switch (or impostor) that stops answering is dropped with
        :class:`AgiIdle` and the session ends (the dialplan's fallback takes the call)."""
        if self.hung_up:
            raise AgiHangup("already hung up")
        if "\n" in text or "\r" in text or "\x00" in text:
            raise AgiError(f"AGI command contains a line break or NUL: {text!r}")
        budget = (own_duration(text) if timeout is None else timeout) + self.idle_timeout
        async with self._lock:
            try:
                async with asyncio.timeout(budget):
                    return await self._exchange(text)
            except TimeoutError:
                self.hung_up = True
                self._writer.close()
                raise AgiIdle(f"no reply to {text.split()[0]!r} within {budget:.0f} s: session dropped") from None
            except (ConnectionError, AgiHangup):
                self.hung_up = True
                raise AgiHangup(text) from None

    async def _exchange(self, text: str) -> AgiReply:
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

    async def exec(self, app: str, args: str = "", timeout: float | None = None) -> AgiReply:
        """``timeout``: how long the application may run (default :data:`STREAM_MAX`)."""
        return await self.command(f'EXEC {app} "{_quote(args)}"' if args else f"EXEC {app}", timeout)

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
