"""Messages left by held callers (R4, R6 message taking).

One JSON file per message, written atomically next to the recording, so the API, the
dashboard and a person with ``ls`` all see the same thing::

    <messages_dir>/<id>.wav          the recording (written by Asterisk's Record)
    <messages_dir>/<id>.json         caller number, time, agent, call id, held seconds

Call-backs are not kept here: the ``callback.requested`` event is their one source, and
the call records keep the durable call-back (``ivr/records/callbacks.py``) that the
call-back scheduler (``ivr/callbacks``) places.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Message:
    id: str
    caller: str
    agent: str
    call_id: str
    at: str  # ISO 8601, UTC
    held_seconds: float
    file: str  # the recording, as the controller sees it
    recorded: bool  # Asterisk left a non-empty file

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_id(uniqueid: str, at: float) -> str:
    """``20250101T120000Z-1712345678.12``: sortable by time, safe as a file name."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9.-]', '_', uniqueid)}"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


class HoldStore:
    def __init__(self, messages_dir: str | Path) -> None:
        self.dir = Path(messages_dir)

    def prepare(self) -> None:
        """Create the directories (Asterisk records into ``dir``: it must exist)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o770)  # noqa: S103 - Asterisk (group ivr) records into it; no world access

    def recording(self, item: str) -> Path:
        return self.dir / f"{item}.wav"

    def add_message(self, *, item: str, caller: str, agent: str, call_id: str, held_seconds: float,
                    at: float | None = None) -> Message:
        wav = self.recording(item)
        msg = Message(item, caller, agent, call_id, iso(at or time.time()), round(held_seconds, 3),
                      str(wav), wav.exists() and wav.stat().st_size > 44)
        _write_json(self.dir / f"{item}.json", msg.as_dict())
        return msg

    def messages(self) -> list[Message]:
        return [Message(**d) for d in _read_all(self.dir)]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    tmp.replace(path)


def _read_all(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a half-written or foreign file is not an item
    return out
