"""A throwaway PostgreSQL server from Debian's binaries, on a Unix socket (no TCP), and
throwaway databases on it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from ivr.records.db import PostgresDatabase, connect


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[str]:
    """Start a cluster, yield its base URL (database ``postgres``, user ``ivr``), stop it.
    ``fsync`` off (tests) unless asked for (a benchmark of commits)."""
    bindir = pg_bin()
    if bindir is None:
        message = "PostgreSQL server binaries not installed (Debian package postgresql)"
        if os.environ.get("CI") or os.environ.get("IVR_FULL_RUN"):  # tests/run installed it: a failure
            pytest.fail(message)
        pytest.skip(message)
    home = Path(tempfile.mkdtemp(prefix="ivr-pg-"))
    data, sock = home / "data", home / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(home, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "ivr", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(home / "log"), "-o",
        f"-c listen_addresses='' -k {sock} -c fsync={'on' if fsync else 'off'}", "start")
    try:
        yield f"postgresql://ivr@/postgres?host={sock}"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def throwaway_database(server: str, name: str) -> AsyncIterator[str]:
    """Database ``name`` on the server at URL ``server`` (from :func:`postgres_server`):
    created, its URL yielded, then dropped with whatever is still connected to it."""
    admin = await connect(server)
    try:
        assert isinstance(admin, PostgresDatabase)
        await admin.pool.execute(f"CREATE DATABASE {name}")
        try:
            yield server.replace("/postgres?", f"/{name}?")
        finally:
            await admin.pool.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()
