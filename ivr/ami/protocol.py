"""A leaner reader of the AMI stream, on panoramisk's protocol (issue 10, AMI ingest).

panoramisk builds every message with ``Message.from_line`` into its case-insensitive
dict, one Python-level ``__setitem__`` per header: about half of the controller's time
per event. :class:`AmiProtocol` reads the same frames with :func:`parse_message`, which
gives an :class:`AmiMessage`: a ``panoramisk.message.Message`` (subclass) with the same
keys, values, case-insensitive lookups, attribute access, ``id``/``action_id``/
``success``, held as one lowercased-key dict built in C. Replies to actions reach
panoramisk's action futures exactly as in ``AMIProtocol.handle_message``; events go to
the factory's ``dispatch`` as before.

One difference, on purpose: a frame whose ``Event`` header is repeated (a list) is
dropped with a warning; panoramisk raised out of ``data_received`` on it, which closed
the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from typing import Any
from urllib.parse import unquote

import structlog
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = structlog.get_logger("ivr.ami")

EOL = "\r\n"
FRAME_END = EOL + EOL
BANNER = "Asterisk Call Manager/"
_HAS_BODY = ("Response: Follows", "Response: Fail")  # as Message.from_line
_OWN = frozenset({"_values", "_names", "_headers"})


class _Lowered(dict[str, str]):
    """``key.lower()``, remembered: AMI uses a few hundred header names over and over, and
    the remembered string comes with its hash computed. Bounded (names come off the wire)."""

    def __missing__(self, key: str) -> str:
        lowered = key.lower()
        if len(self) < 4096:
            self[key] = lowered
        return lowered


_lower = _Lowered().__getitem__


class AmiMessage(Message):  # type: ignore[misc]  # panoramisk ships no types
    """A ``panoramisk.message.Message`` that is cheap to build.

    panoramisk keeps ``{lowercased key: (key as sent, value)}``; this keeps
    ``{lowercased key: value}`` (``_values``) and makes the key-as-sent map
    (``_names``, for iteration) only when something iterates. Like panoramisk's, the
    mapping has a ``content`` key (the body of ``Response: Follows``, else ``""``).
    """

    def __init__(self, headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
                 content: str = "") -> None:
        self._set(dict(headers or {}), content)

    def _set(self, headers: dict[str, Any], content: str) -> None:
        # What CaseInsensitiveDict.update(headers, content=content) leaves: for keys equal
        # but for case, the position of the first and the value (and spelling) of the last.
        self._headers = headers
        self._values = values = dict(zip(map(_lower, headers), headers.values(), strict=True))
        values["content"] = content
        self._names: dict[str, str] | None = None
        self.manager: Any = None  # the panoramisk Manager that dispatches it

    @classmethod
    def parsed(cls, headers: dict[str, Any], content: str) -> AmiMessage:
        message = cls.__new__(cls)
        message._set(headers, content)
        return message

    def _casing(self) -> dict[str, str]:
        names = self._names
        if names is None:
            headers = self._headers
            names = self._names = dict(zip(map(_lower, headers), headers, strict=True))
            names["content"] = "content"
        return names

    # -- the mapping (CaseInsensitiveDict's semantics, without its per-key tuples) ------
    def __getitem__(self, key: str) -> Any:
        return self._values[_lower(key)]

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(_lower(key), default)

    def __contains__(self, key: object) -> bool:
        return _lower(key) in self._values  # type: ignore[arg-type]  # str keys, as panoramisk

    def __setitem__(self, key: str, value: Any) -> None:
        lowered = _lower(key)
        self._casing()[lowered] = key
        self._values[lowered] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._casing().values())

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, attr: str) -> Any:
        if attr in _OWN:  # not set yet (an object made without __init__): no recursion
            raise AttributeError(attr)
        return self.get(attr, "")

    @property
    def _store(self) -> dict[str, tuple[str, Any]]:
        """panoramisk's internal layout, for code that reads it (a copy)."""
        names = self._casing()
        return {k: (names[k], v) for k, v in self._values.items()}


def parse_message(frame: str) -> AmiMessage | None:
    """One AMI frame (its lines without the blank line that ends it, stripped) as
    ``Message.from_line`` reads it: ``Key: value`` lines (split at the first ``": "``,
    other lines ignored), a repeated key gives a list, ``Result`` is URL-unquoted, the
    last line of ``Response: Follows``/``Fail`` is the body; ``None`` unless the frame
    has an ``Event`` or ``Response`` header."""
    lines = frame.split(EOL)
    content = ""
    if lines[0].startswith(_HAS_BODY):
        content = lines.pop()
        while not content and lines:
            content = lines.pop()
    headers: dict[str, Any] = {}
    for key, sep, value in map(str.partition, lines, repeat(": ")):
        if sep:
            if key in headers:
                old = headers[key]
                headers[key] = [*old, value] if isinstance(old, list) else [old, value]
            else:
                headers[key] = value
    if "Event" not in headers and "Response" not in headers:
        return None
    message = AmiMessage.parsed(headers, content)
    values = message._values
    for quoted in Message.quoted_keys:
        if quoted in values:
            value = values[quoted]
            values[quoted] = ([unquote(v).strip() for v in value] if isinstance(value, list)
                              else unquote(value).strip())
    return message


class AmiProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk ships no types
    """panoramisk's ``AMIProtocol`` reading frames with :func:`parse_message`."""

    version: str | None  # set by the base class, read here
    received = 0  # bytes read so far: the keep-alive tells a busy switch from a dead socket

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        # panoramisk's attributes (set by its connection_made and its Manager), read by name.
        encoding = getattr(self, "encoding", "ascii")
        text = data.decode(encoding, "ignore")
        stream = getattr(self.factory, "save_stream", None)
        if stream:  # panoramisk's debugging aid, kept
            if hasattr(stream, "write"):
                stream.write(text.encode(encoding))
            else:
                with open(stream, "a+b") as f:
                    f.write(text.encode(encoding))
        if self.version is None and text.startswith(BANNER):
            self.version = text.partition(EOL)[0].partition("/")[2].strip()
            self.log.info("protocol version: '%s'", self.version)
        if self.queue:
            text = self.queue.popleft() + text
        frames = text.split(FRAME_END)
        self.queue.append(frames.pop())
        debug = self.log.isEnabledFor(logging.DEBUG)
        handle = self.handle_message
        for frame in frames:
            message = parse_message(frame.strip())  # strip: Asterisk sometimes sends one EOL
            if debug:
                self.log.debug("message interpreted: %r", message)
            if message is not None:
                handle(message)

    def handle_message(self, message: Message) -> None:
        """``AMIProtocol.handle_message``: a reply completes its action's future; an
        event (also one with an unknown ActionID) goes to ``factory.dispatch``."""
        responses = self.responses
        if responses:  # CommandID, else ActionID; then ActionID (a repeated one is no id)
            response = next((responses[i] for i in (message.id, message.action_id)
                             if isinstance(i, str) and i in responses), None)
            if response is not None:
                if response.add_message(message):  # completed; dequeue
                    responses.pop(response.id)
                    if response.action_id:
                        responses.pop(response.action_id, None)
                return
        event = message.get("Event")
        if event is None:
            return
        if not isinstance(event, str):
            log.warning("ami.malformed_frame", reason="repeated Event header", ami_event=event)
            return
        if event.lower() == "shutdown":
            self.connection_lost(message)
        self.factory.dispatch(message)
