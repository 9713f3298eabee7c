"""One small async database interface over SQLite (aiosqlite) and PostgreSQL (asyncpg).

The records code writes portable SQL with ``?`` placeholders; for PostgreSQL they are
rewritten to ``$1, $2, ...``. Rows come back as plain dicts. Each :meth:`Database.transaction`
is committed when its block ends, so a record is on disk as soon as its event is applied.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ivr.errors import IvrError

Row = dict[str, Any]


class DatabaseError(IvrError):
    error_id = "database-error"


class Tx(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Database:
    """Common interface; use :func:`connect` to get one."""

    url: str
    dialect: str

    async def close(self) -> None:
        raise NotImplementedError

    def transaction(self) -> Any:  # async context manager yielding a Tx
        raise NotImplementedError

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with self.transaction() as tx:
            await tx.execute(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

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

    def __init__(self, url: str, conn: Any) -> None:
        self.url = url
        self.conn = conn
        self._lock = asyncio.Lock()  # one connection: transactions must not interleave

    @classmethod
    async def open(cls, url: str, path: str) -> SqliteDatabase:
        import aiosqlite

        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        return cls(url, conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    async def close(self) -> None:
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

    def __init__(self, url: str, pool: Any) -> None:
        self.url = url
        self.pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        try:
            import asyncpg
        except ModuleNotFoundError as exc:
            raise DatabaseError(
                "PostgreSQL needs the asyncpg driver: pip install 'ivr[postgresql]'", url=_redact(url)
            ) from exc
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        return cls(url, pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def close(self) -> None:
        await self.pool.close()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


async def connect(url: str) -> Database:
    """Open ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``sqlite://:memory:``
    or ``postgresql://user:pw@host/db``."""
    scheme = url.split(":", 1)[0].lower()
    try:
        if scheme == "sqlite":
            rest = url[len("sqlite:"):]
            if rest in ("//:memory:", "///:memory:"):
                return await SqliteDatabase.open(url, ":memory:")
            if not rest.startswith("///") or len(rest) == 3:
                raise DatabaseError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db", url=url)
            return await SqliteDatabase.open(url, rest[3:])
        if scheme in ("postgresql", "postgres"):
            return await PostgresDatabase.open(url)
    except DatabaseError:
        raise
    except Exception as exc:  # driver errors: one clear error type with the cause
        raise DatabaseError(f"cannot open the database {_redact(url)}: {exc}", url=_redact(url)) from exc
    raise DatabaseError(
        f"unsupported database URL {_redact(url)!r}: use sqlite:///path or postgresql://...", url=_redact(url)
    )
