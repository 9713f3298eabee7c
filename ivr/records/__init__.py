"""Call records: an event-fed store in SQLite (default) or PostgreSQL, with migrations."""

from ivr.records.db import Database, DatabaseError, connect
from ivr.records.recorder import CallRecorder
from ivr.records.store import CallFilter, CallStore

__all__ = ["CallFilter", "CallRecorder", "CallStore", "Database", "DatabaseError", "connect"]
