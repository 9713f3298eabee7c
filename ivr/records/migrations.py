"""Schema migrations: numbered SQL files (``NNNN_name.sql``) applied in order, once each.

The ``schema_version`` table lists the versions applied. Each file runs in its own
transaction, so a failing migration leaves the schema at the previous version.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources

from ivr.records.db import Database, DatabaseError, Tx

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        # The migration files keep ';' out of comments and strings.
        text = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in text.split(";") if s.strip()]


def bundled() -> list[Migration]:
    found = []
    for entry in resources.files("ivr.records").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migrations share a version number", versions=versions)
    return found


async def current_version(db: Database) -> int:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    row = await db.fetchone("SELECT MAX(version) AS v FROM schema_version")
    return int(row["v"]) if row and row["v"] is not None else 0


async def migrate(db: Database, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the migrations newer than the database's version; return the versions applied."""
    migrations = bundled() if migrations is None else migrations
    have = await current_version(db)
    newest = max((m.version for m in migrations), default=0)
    if have > newest:
        raise DatabaseError(
            f"the database schema is version {have}, newer than this controller knows ({newest})",
            reason="config", have=have, known=newest,
        )
    applied = []
    for mig in migrations:
        if mig.version <= have:
            continue
        async def apply(tx: Tx, mig: Migration = mig) -> None:
            for stmt in mig.statements():
                await tx.execute(stmt)
            await tx.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, time.time()),
            )

        await db.run(apply)
        applied.append(mig.version)
    return applied
