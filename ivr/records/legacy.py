"""Messages an earlier version kept as JSON files, taken into the call records once.

Before issue 15 the hold feature wrote ``<messages_dir>/<id>.json`` beside each recording
(``id``, ``caller``, ``agent``, ``call_id``, ``at`` (ISO 8601), ``held_seconds``, ``file``,
``recorded``). The call records are now the one store of messages: on every opening of
the database the controller runs :func:`import_json_messages`, which writes each such
file as the ``message.recorded`` event it would be today (its id is derived from the
message's, so a second import writes nothing twice) and deletes the file only once the
database has it. A file that cannot be read as a message is left where it is, logged and
counted; so is one the database refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from ivr.events import CallEvent
from ivr.records.db import DatabaseError
from ivr.records.store import CallStore

log = structlog.get_logger("ivr.records")

_FIELDS = ("id", "call_id", "at")


@dataclass
class Imported:
    """What one import did: messages written (or on record already), files left behind."""

    imported: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def message_events(data: dict[str, Any]) -> list[CallEvent]:
    """The events that put one old JSON message on record; ValueError when it is not one."""
    missing = [k for k in _FIELDS if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise ValueError(f"not a message file: {', '.join(missing)} missing or not text")
    at = datetime.fromisoformat(data["at"]).timestamp()
    item, call_id = data["id"], data["call_id"]
    held = data.get("held_seconds")
    return [CallEvent("message.recorded", call_id, {
        "item": item, "caller_number": str(data.get("caller") or ""), "agent": str(data.get("agent") or ""),
        "file": str(data.get("file") or ""), "recorded": bool(data.get("recorded")),
        "held_seconds": float(held) if isinstance(held, (int, float)) else None, "imported": True,
    }, at=at, id=f"legacy-message-{item}")]


def read_json_messages(directory: Path) -> list[tuple[Path, list[CallEvent] | str]]:
    """Each ``*.json`` file in ``directory`` with its events, or why it is not a message."""
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return []  # no directory: nothing of an earlier version
    found: list[tuple[Path, list[CallEvent] | str]] = []
    for path in paths:
        try:
            found.append((path, message_events(json.loads(path.read_text(encoding="utf-8")))))
        except (OSError, ValueError, TypeError) as exc:
            found.append((path, str(exc) or type(exc).__name__))
    return found


async def import_json_messages(store: CallStore, directory: Path) -> Imported:
    """Take every ``*.json`` message in ``directory`` into ``store`` (see the module).
    Raises :class:`DatabaseError` on an outage (what is imported so far is gone from disk)."""
    done = Imported()
    for path, events in read_json_messages(directory):
        if isinstance(events, str):
            done.unreadable.append(path.name)
            log.warning("records.legacy_message_unreadable", file=str(path), error=events)
            continue
        first = events[0]
        if await store.call(first.call_id) is None:  # a call long over: closed at once, not left "live"
            events.append(CallEvent("call.ended", first.call_id, {"reason": "imported", "hung_up_first": "unknown"},
                                    at=first.at, id=f"legacy-ended-{first.data['item']}"))
        try:
            await store.apply_many(events)
        except DatabaseError as exc:
            if exc.transient:
                raise  # an outage: the rest waits for the next opening
            done.refused.append(path.name)
            log.error("records.legacy_message_refused", file=str(path), error=str(exc))
            continue
        _remove(path)
        done.imported.append(path.name)
    if done.imported or done.unreadable or done.refused:
        log.info("records.legacy_messages", directory=str(directory), imported=len(done.imported),
                 unreadable=len(done.unreadable), refused=len(done.refused))
    return done


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # on record already: a second import writes nothing twice
        log.warning("records.legacy_message_not_removed", file=str(path), error=str(exc))
