"""One small async database interface over SQLite (aiosqlite) and PostgreSQL (asyncpg).

The records code writes portable SQL with ``?`` placeholders; for PostgreSQL they are
rewritten to ``$1, $2, ...``. Rows come back as plain dicts.

Every database call goes through :meth:`Database.run`: one transaction, committed when
the function returns, run in a task of its own with a deadline (``timeout``). A call that
misses its deadline is abandoned (never awaited: a hung PostgreSQL socket or a SQLite
thread waiting on a lock cannot hold the caller), the database is marked ``broken`` and
must be reopened. Driver errors (``sqlite3.Error``, asyncpg's errors, ``OSError``,
timeouts) are turned into :class:`DatabaseError` here and nowhere else (:func:`translate`):
``transient`` ones mean "the database is away, try again later", the others that it
refused this data.

SQLite runs in WAL mode with ``synchronous = FULL``: a transaction is on disk (the WAL
fsynced) when its commit returns, so a committed record survives a power cut.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from ivr.errors import IvrError
from ivr.sections import DatabaseConfig

Row = dict[str, Any]
T = TypeVar("T")

# [database] timeout, connect_timeout: each database call (a transaction), opening the database
DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT = DatabaseConfig().timeout, DatabaseConfig().connect_timeout


class DatabaseError(IvrError):
    """The records database failed. ``reason``: ``locked``, ``timeout``, ``unreachable``,
    ``broken`` (reopen it), ``error`` (transient); ``rejected`` (this data, not the
    database), ``conflict`` (PostgreSQL rolled this transaction back, a deadlock with
    another node writing the same call: try it again at once), ``config`` (a bad URL, a
    missing driver)."""

    error_id = "database-error"
    http_status = 503  # the API: the records are unavailable for now
    TRANSIENT = frozenset({"locked", "timeout", "unreachable", "broken", "error"})

    def __init__(self, message: str, *, reason: str = "error", **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason

    @property
    def transient(self) -> bool:
        return self.reason in self.TRANSIENT


def _asyncpg_errors() -> tuple[tuple[type[BaseException], ...], ...]:
    """(asyncpg errors meaning "this data was refused", "rolled back, try again", all
    other asyncpg errors)."""
    try:
        import asyncpg  # noqa: PLC0415 - optional (the postgresql extra)
    except ModuleNotFoundError:
        return (), (), ()
    refused = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError,
               asyncpg.SyntaxOrAccessError)
    return refused, (asyncpg.TransactionRollbackError,), (asyncpg.PostgresError, asyncpg.InterfaceError)


_SQLITE_UNUSABLE = re.compile(
    r"disk|I/O|readonly|read-only|full|unable to open|cannot open|interrupt|not a database|malformed"
    r"|closed|out of memory|protocol", re.I)


def translate(exc: BaseException, url: str = "") -> DatabaseError | None:
    """The one place driver errors become :class:`DatabaseError`; None: not a driver
    error (a bug in the caller, left to propagate)."""
    if isinstance(exc, DatabaseError):
        return exc
    where = _redact(url)
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    pg_refused, pg_again, pg_any = _asyncpg_errors()
    reason: str | None = None
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
                        sqlite3.InterfaceError)):
        reason = "rejected"
    elif isinstance(exc, sqlite3.OperationalError) and re.search(r"locked|busy", str(exc), re.I):
        reason = "locked"
    elif isinstance(exc, sqlite3.OperationalError) and not _SQLITE_UNUSABLE.search(str(exc)):
        reason = "rejected"  # no such table, syntax, already exists: this statement, not the file
    elif isinstance(exc, sqlite3.Error):
        reason = "error"  # disk I/O, read-only, full, corrupt: the database is not usable now
    elif pg_refused and isinstance(exc, pg_refused):
        reason = "rejected"
    elif pg_again and isinstance(exc, pg_again):
        reason = "conflict"  # not transient: the recorder writes it again at once, the pool stays
    elif pg_any and isinstance(exc, pg_any):
        reason = "error"
    elif isinstance(exc, TimeoutError):
        reason = "timeout"
    elif isinstance(exc, (OSError, EOFError)):
        reason = "unreachable"
    if reason is None:
        return None
    err = DatabaseError(f"database {where}: {text}" if where else f"database: {text}", reason=reason,
                        url=where)
    err.__cause__ = exc
    return err


class Tx(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned call's late error is not "never retrieved"


async def _within(coro: Awaitable[T], timeout: float) -> asyncio.Future[T] | None:
    """Run ``coro`` as a task for at most ``timeout`` s; the finished task, or None when
    it did not finish: then it is cancelled and left behind, never awaited (its cleanup
    may itself hang on a dead socket or a locked file)."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        done = set()
        raise
    finally:
        if not done:
            task.cancel()
            task.add_done_callback(_consume)
    return task if done else None


class Database:
    """Common interface; use :func:`connect` to get one."""

    url: str
    dialect: str
    timeout: float = DEFAULT_TIMEOUT
    broken: bool = False
    on_broken: Callable[[], None] | None = None  # told once when a call fails it (the recorder reopens)

    def _mark_broken(self) -> None:
        if not self.broken:
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()

    def transaction(self, read_only: bool = False) -> Any:  # async context manager yielding a Tx; use run()
        raise NotImplementedError

    def _abandon(self) -> None:
        """A call missed its deadline: make the connection unusable at once (no await)."""

    async def _close(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Close, bounded: a hung database is abandoned after ``timeout``."""
        if self.broken:
            self._abandon()
            return
        try:
            await asyncio.wait_for(self._close(), self.timeout)
        except Exception as exc:  # closing a failed database: nothing left to save
            self._abandon()
            if translate(exc, self.url) is None:
                raise

    async def run(self, fn: Callable[[Tx], Awaitable[T]], *, read_only: bool = False) -> T:
        """``fn(tx)`` in one transaction, within ``timeout`` s; driver errors become
        :class:`DatabaseError`. ``read_only``: ``fn`` only reads, and every statement sees one
        snapshot (PostgreSQL: a REPEATABLE READ READ ONLY transaction; an SQLite transaction
        is one snapshot already, and this connection's writes wait for it)."""
        if self.broken:
            raise DatabaseError(f"database {_redact(self.url)}: closed after an earlier failure",
                                reason="broken")

        async def body() -> T:
            async with self.transaction(read_only) as tx:
                return await fn(tx)

        task = await _within(body(), self.timeout)
        if task is None:
            self._mark_broken()
            self._abandon()
            raise DatabaseError(f"database {_redact(self.url)}: no answer within {self.timeout} s",
                                reason="timeout", url=_redact(self.url))
        exc = task.exception()
        if exc is None:
            return task.result()
        err = translate(exc, self.url)
        if err is None:
            raise exc
        if err.transient:
            self._mark_broken()
        if err is exc:
            raise err
        raise err from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async def go(tx: Tx) -> None:
            await tx.execute(sql, params)

        await self.run(go)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async def go(tx: Tx) -> list[Row]:
            return await tx.fetchall(sql, params)

        return await self.run(go)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


class _SqliteTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.conn.execute(sql, tuple(params))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return [dict(r) for r in await cur.fetchall()]


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, conn: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.conn = conn
        self.timeout = timeout
        self._lock = asyncio.Lock()  # one connection: transactions must not interleave

    @classmethod
    async def open(cls, url: str, path: str, timeout: float = DEFAULT_TIMEOUT) -> SqliteDatabase:
        import aiosqlite  # noqa: PLC0415 - loaded only by a deployment that keeps records in SQLite

        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SQLite waits for another writer's lock at most this long, so a call abandoned
        # at its deadline frees the connection's thread soon after.
        busy = max(0.0, timeout * 0.8)
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy)
        db = cls(url, conn, timeout)
        try:
            conn.row_factory = aiosqlite.Row

            async def setup() -> None:
                await conn.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
                await conn.execute("PRAGMA journal_mode=WAL")
                await conn.execute("PRAGMA synchronous=FULL")  # committed = fsynced (README)

            await asyncio.wait_for(setup(), timeout)
        except BaseException:
            db._abandon()
            raise
        return db

    @asynccontextmanager
    async def transaction(self, read_only: bool = False) -> AsyncIterator[Tx]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    def _abandon(self) -> None:
        self.broken = True
        self.conn.stop()  # the worker thread closes the file once its current call ends

    async def _close(self) -> None:
        await self.conn.close()


_PLACEHOLDER = re.compile(r"\?")


def to_dollar_params(sql: str) -> str:
    """``?`` placeholders to PostgreSQL's ``$n`` (the records SQL has no ``?`` in strings)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.conn.execute(to_dollar_params(sql), *params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(r) for r in await self.conn.fetch(to_dollar_params(sql), *params)]


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, pool: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.pool = pool
        self.timeout = timeout

    @classmethod
    async def open(cls, url: str, timeout: float = DEFAULT_TIMEOUT,
                   connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> PostgresDatabase:
        try:
            import asyncpg  # noqa: PLC0415 - optional (the postgresql extra)
        except ModuleNotFoundError as exc:
            raise DatabaseError(
                "PostgreSQL needs the asyncpg driver: pip install 'ivr[postgresql]'", reason="config",
                url=_redact(url),
            ) from exc
        # The driver's own timeouts too (a server that accepts and never answers), besides
        # the deadline connect() puts around all of this.
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=connect_timeout,
                                         command_timeout=timeout)
        return cls(url, pool, timeout)

    @asynccontextmanager
    async def transaction(self, read_only: bool = False) -> AsyncIterator[Tx]:
        isolation = "repeatable_read" if read_only else None  # one snapshot for every statement
        async with self.pool.acquire() as conn, conn.transaction(isolation=isolation, readonly=read_only):
            yield _PgTx(conn)

    def _abandon(self) -> None:
        self.broken = True
        self.pool.terminate()  # closes every socket now, without a goodbye to a hung server

    async def _close(self) -> None:
        if self.broken:
            self.pool.terminate()
        else:
            await self.pool.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


async def connect(url: str, *, timeout: float = DEFAULT_TIMEOUT,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Database:
    """Open ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``sqlite://:memory:``
    or ``postgresql://user:pw@host/db``, within ``connect_timeout`` s; every later call
    has ``timeout`` s. Raises :class:`DatabaseError` only."""
    scheme = url.split(":", 1)[0].lower()
    opening: Awaitable[Database]
    if scheme == "sqlite":
        rest = url[len("sqlite:"):]
        if rest in ("//:memory:", "///:memory:"):
            opening = SqliteDatabase.open(url, ":memory:", timeout)
        elif not rest.startswith("///") or len(rest) == 3:
            raise DatabaseError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db", reason="config",
                                url=url)
        else:
            opening = SqliteDatabase.open(url, rest[3:], timeout)
    elif scheme in ("postgresql", "postgres"):
        opening = PostgresDatabase.open(url, timeout, connect_timeout)
    else:
        raise DatabaseError(
            f"unsupported database URL {_redact(url)!r}: use sqlite:///path or postgresql://...", reason="config",
            url=_redact(url),
        )
    task = await _within(opening, connect_timeout)
    if task is None:
        raise DatabaseError(f"cannot open the database {_redact(url)}: no answer within {connect_timeout} s",
                            reason="timeout", url=_redact(url))
    exc = task.exception()
    if exc is None:
        return task.result()
    if isinstance(exc, DatabaseError):
        raise exc
    err = translate(exc, url)
    if err is None:  # not a known driver error, still one clear error type with the cause
        err = DatabaseError(str(exc), reason="error")
    raise DatabaseError(f"cannot open the database {_redact(url)}: {exc}", reason=err.reason,
                        url=_redact(url)) from exc
