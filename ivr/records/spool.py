"""The records spool: call events waiting on local disk while the database is away.

One append-only file of JSON lines, ``records-spool.jsonl``, one event per line
(``{"id", "kind", "call_id", "at", "data"}``), in the order the events happened. Lines
are written with ``os.write`` on an ``O_APPEND`` descriptor from the event loop's thread
(so they keep their order and a controller crash loses none that were written), and
:meth:`Spool.sync` fsyncs them; the recorder calls it after each batch it spools, before
it takes the next (a power cut loses at most the batch being written). The file is
replayed from the start of what is left (``cursor``) once the database is back and
truncated when it has all been written. A replay cut short (a crash, the database gone
again) starts over: the records skip events whose id they hold, so nothing is written
twice.

A line that cannot be read back (a torn last line after a power cut) is counted as
dropped (``spool_corrupt``), as is an event that does not fit (``spool_full``, the file
has ``max_bytes`` at most) or cannot be written (``spool_unwritable``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ivr.errors import IvrError
from ivr.events import CallEvent

log = structlog.get_logger("ivr.records")

FILE_NAME = "records-spool.jsonl"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class SpoolError(IvrError):
    """An event could not be spooled; ``reason`` is the dropped-counter label."""

    error_id = "records-spool"

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    event: CallEvent | None  # None: the line could not be read back
    end: int  # offset just past this line
    line: bytes


def encode(event: CallEvent) -> bytes:
    doc = {"id": event.id, "kind": event.kind, "call_id": event.call_id, "at": event.at, "data": event.data}
    return json.dumps(doc, default=str, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> CallEvent | None:
    try:
        doc = json.loads(line)
        return CallEvent(str(doc["kind"]), str(doc["call_id"]), dict(doc["data"]), float(doc["at"]),
                         str(doc["id"]))
    except (ValueError, KeyError, TypeError):
        return None


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.max_bytes = max_bytes
        self.cursor = 0  # offset of the first line not written to the database yet
        self.size = 0
        self.pending = 0  # lines from the cursor on
        self._fd: int | None = None
        self._unsynced = False

    # -- at start ----------------------------------------------------------------------

    def load(self) -> int:
        """Take up what a previous run left; returns the number of torn lines cut off
        (0 or 1: only the last line can be torn). Raises :class:`SpoolError`."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SpoolError(f"cannot read the records spool {self.path}: {exc}", reason="spool_unwritable",
                             path=str(self.path)) from exc
        torn = 0
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.error("records.spool_torn_line", path=str(self.path), bytes=len(data) - keep)
            try:
                os.truncate(self.path, keep)
            except OSError as exc:
                raise SpoolError(f"cannot repair the records spool {self.path}: {exc}",
                                 reason="spool_unwritable", path=str(self.path)) from exc
            data, torn = data[:keep], 1
        self.cursor, self.size, self.pending = 0, len(data), data.count(b"\n")
        return torn

    # -- writing -----------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is None:
            new = not self.directory.exists()
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if new or created:  # the file's name is on disk too
                self._sync_dir()
        return self._fd

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, event: CallEvent) -> None:
        """Write one event at the end (not fsynced yet: see :meth:`sync`)."""
        line = encode(event)
        if self.size + len(line) > self.max_bytes:
            raise SpoolError(f"the records spool {self.path} is full ({self.max_bytes} bytes)",
                             reason="spool_full", path=str(self.path))
        try:
            fd = self._open()
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            self._cut_back()
            raise SpoolError(f"cannot write the records spool {self.path}: {exc}", reason="spool_unwritable",
                             path=str(self.path)) from exc
        self.size += len(line)
        self.pending += 1
        self._unsynced = True

    def _cut_back(self) -> None:
        """After a failed write: no half line may stay (it would spoil the next one)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self.size)
        except OSError:
            self.close()

    def prepend(self, event: CallEvent) -> None:
        """Put one event before everything left (an event that was being written when
        newer ones were spooled). Rewrites the file: copy, fsync, rename."""
        if not self.pending:
            self.append(event)
            return
        line = encode(event)
        if self.size - self.cursor + len(line) > self.max_bytes:
            raise SpoolError(f"the records spool {self.path} is full ({self.max_bytes} bytes)",
                             reason="spool_full", path=str(self.path))
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(self.path, "rb") as src:
                src.seek(self.cursor)
                rest = src.read()
            with open(tmp, "wb") as dst:
                dst.write(line + rest)
                dst.flush()
                os.fsync(dst.fileno())
            self.close()
            os.replace(tmp, self.path)
            self._sync_dir()
        except OSError as exc:
            raise SpoolError(f"cannot write the records spool {self.path}: {exc}", reason="spool_unwritable",
                             path=str(self.path)) from exc
        self.cursor, self.size = 0, len(line) + len(rest)
        self.pending += 1

    def sync(self) -> None:
        """fsync what was appended (call it from a worker thread)."""
        if not self._unsynced or self._fd is None:
            return
        self._unsynced = False
        try:
            os.fsync(self._fd)
        except OSError as exc:
            log.error("records.spool_sync_failed", path=str(self.path), error=str(exc))

    # -- replaying ---------------------------------------------------------------------

    def read(self, limit: int = 100) -> list[Entry]:
        """Up to ``limit`` lines from the cursor on (the cursor does not move)."""
        if not self.pending:
            return []
        entries: list[Entry] = []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.cursor)
                offset = self.cursor
                while len(entries) < limit and offset < self.size:
                    line = f.readline()
                    if not line.endswith(b"\n"):
                        break  # cannot happen: lines are written whole
                    offset += len(line)
                    entries.append(Entry(decode(line), offset, line))
        except OSError as exc:
            raise SpoolError(f"cannot read the records spool {self.path}: {exc}", reason="spool_unwritable",
                             path=str(self.path)) from exc
        return entries

    def advance(self, entry: Entry) -> None:
        """This line is on record (or given up): move past it; empty the file at the end."""
        self.cursor = entry.end
        self.pending -= 1
        if self.pending == 0:
            try:
                os.ftruncate(self._open(), 0)
            except OSError as exc:  # replayed again at the next start: the records skip what they hold
                log.error("records.spool_truncate_failed", path=str(self.path), error=str(exc))
                return
            self.cursor = self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.close(fd)
