"""Where held callers' messages are recorded (R4, R6 message taking).

The recording is a file Asterisk's ``Record`` writes, ``<messages_dir>/<id>.wav``; what
is known of it (caller number, time, agent, call id, held seconds, whether anything was
recorded, the file) is the ``message.recorded`` event, and the call records keep it
(table ``messages``, ``GET /api/messages``): the one store of messages. Nothing else is
written here. JSON files an earlier version wrote beside the recordings are taken into
the call records on start (:mod:`ivr.records.legacy`).

Call-backs are not kept here either: the ``callback.requested`` event is their one
source, and the call records keep the durable call-back (``ivr/records/callbacks.py``).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

WAV_HEADER = 44  # bytes: a recording no longer than this holds no audio


def item_id(uniqueid: str, at: float) -> str:
    """``20250101T120000Z-1712345678.12``: sortable by time, safe as a file name."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9.-]', '_', uniqueid)}"


class HoldStore:
    """The directory of message recordings."""

    def __init__(self, messages_dir: str | Path) -> None:
        self.dir = Path(messages_dir)

    def prepare(self) -> None:
        """Create the directory (Asterisk records into ``dir``: it must exist)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o770)  # noqa: S103 - Asterisk (group ivr) records into it; no world access

    def recording(self, item: str) -> Path:
        return self.dir / f"{item}.wav"

    def recorded(self, item: str) -> bool:
        """Asterisk left a recording with audio in it."""
        wav = self.recording(item)
        try:
            return wav.stat().st_size > WAV_HEADER
        except OSError:
            return False
