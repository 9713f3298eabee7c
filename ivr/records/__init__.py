"""Call records: an event-fed store in SQLite (default) or PostgreSQL, with migrations."""

from ivr.records.db import Database, DatabaseError, connect
from ivr.records.queries import CallFilter
from ivr.records.recorder import CallRecorder
from ivr.records.store import CallStore

__all__ = ["CallFilter", "CallRecorder", "CallStore", "Database", "DatabaseError", "connect"]
