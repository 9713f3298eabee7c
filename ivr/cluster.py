"""Leadership of a controller pair: a lease row in PostgreSQL with a fencing token.

Nodes configured with the same ``[cluster] switch`` and the same PostgreSQL database
share one row of ``ivr_lease``. A node that finds the row expired (by PostgreSQL's
``now()``: one clock for every node) takes it and increments ``token``; the leader renews
it every ``renew_interval`` s while it has not expired. A lease that expired is never
renewed, only taken again, so every leadership has a token of its own and tokens only grow.

Timing (README "Controller pairs"): before each renewal the leader reads its clock
(``t0``, :func:`boottime`); a renewal that succeeds moves the server's expiry to ``now() + ttl``
where ``now() >= t0`` in real time, so the leader's own deadline ``t0 + ttl - margin``
falls at least ``margin`` s before any other node can take the lease, whatever happens to
the renewals that follow (a cut network, a hung socket, a paused process): :meth:`Lease.
may_act` is a clock comparison, not a database call. A dead leader's lease is taken at
most ``ttl + poll_interval`` s (plus one query) after its last renewal.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.errors import IvrError
from ivr.sections import ClusterConfig, DatabaseConfig

log = structlog.get_logger("ivr.cluster")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ivr_lease (
    switch text PRIMARY KEY,
    node text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL
)"""
# Take the lease when nobody holds it or it has expired; a new token every time.
ACQUIRE = """
INSERT INTO ivr_lease AS l (switch, node, token, expires_at, renewed_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3), now())
ON CONFLICT (switch) DO UPDATE
    SET node = EXCLUDED.node, token = l.token + 1, expires_at = EXCLUDED.expires_at, renewed_at = now()
    WHERE l.expires_at < now()
RETURNING token"""
# Renew only our own leadership (same token) and only before it expired.
RENEW = """
UPDATE ivr_lease SET expires_at = now() + make_interval(secs => $4), renewed_at = now()
WHERE switch = $1 AND node = $2 AND token = $3 AND expires_at >= now()
RETURNING token"""
RELEASE = """
UPDATE ivr_lease SET expires_at = now() - interval '1 millisecond'
WHERE switch = $1 AND node = $2 AND token = $3"""

RoleCallback = Callable[[str, int], Any]
# The defaults of the keyword arguments below are the sections' (stated once, there).
_CLUSTER, _DATABASE = ClusterConfig(), DatabaseConfig()


def boottime() -> float:
    """A clock that keeps counting while the host is suspended (a VM paused, a laptop
    lid): CLOCK_MONOTONIC stops then, so a leader resumed after its lease expired would
    still believe in it. Falls back to the monotonic clock where there is no BOOTTIME."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)  # Linux only: absent elsewhere
    return time.clock_gettime(clock_id) if clock_id is not None else time.monotonic()


class Lease:
    """This node's side of the lease: ``role`` is ``"leader"`` or ``"standby"``; ``token``
    the fencing token of the current (or last) leadership."""

    def __init__(self, url: str, *, node: str, switch: str = _CLUSTER.switch, ttl: float = _CLUSTER.lease_ttl,
                 renew_interval: float = _CLUSTER.renew_interval, poll_interval: float = _CLUSTER.poll_interval,
                 margin: float = _CLUSTER.margin, connect_timeout: float = _DATABASE.connect_timeout,
                 clock: Callable[[], float] = boottime) -> None:
        self.url, self.node, self.switch = url, node, switch
        self.ttl, self.renew_interval, self.poll_interval = ttl, renew_interval, poll_interval
        self.margin, self.connect_timeout = margin, connect_timeout
        self.clock = clock
        self.token = 0
        self.valid_until = float("-inf")  # local monotonic deadline of our leadership
        self.takeovers = 0  # leaderships won by this node
        self.withheld = 0  # actions refused because this node was not the leader
        self.last_error = ""
        self._leading = False  # the role last reported (may_act() is the truth)
        self._callbacks: list[RoleCallback] = []
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, c: ClusterConfig, database: DatabaseConfig) -> Lease:
        return cls(database.url, node=c.node, switch=c.switch, ttl=c.lease_ttl,
                   renew_interval=c.renew_interval, poll_interval=c.poll_interval, margin=c.margin,
                   connect_timeout=database.connect_timeout)

    # -- the question every action asks ------------------------------------------------
    def may_act(self) -> bool:
        """True while this node holds the lease with a deadline still ahead of it."""
        return self.clock() < self.valid_until

    @property
    def role(self) -> str:
        return "leader" if self.may_act() else "standby"

    def on_change(self, callback: RoleCallback) -> None:
        """``callback(role, token)`` whenever this node becomes leader or stops being it."""
        self._callbacks.append(callback)

    async def wait_role(self, role: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.role != role:  # noqa: ASYNC110 - the role is a clock check, no event marks it
                await asyncio.sleep(0.02)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ivr-lease")

    async def close(self) -> None:
        """Stop; a leader hands the lease back at once so a standby need not wait it out."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        leading, self.valid_until = self.may_act(), float("-inf")
        self._report()
        if leading and self._conn is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self._conn.execute(RELEASE, self.switch, self.node, self.token)
                log.info("cluster.released", node=self.node, token=self.token)
            except Exception as exc:  # noqa: BLE001 - best effort: the lease expires anyway
                log.warning("cluster.release_failed", error=str(exc))
        await self._disconnect()

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                if self._conn is None:
                    await self._connect()
                t0 = self.clock()
                if self.may_act():
                    token = await self._query(RENEW, self.switch, self.node, self.token, self.ttl)
                    if token is None:
                        self.valid_until = float("-inf")
                        log.warning("cluster.lease_lost", node=self.node, token=self.token)
                    else:
                        self.valid_until = t0 + self.ttl - self.margin
                else:
                    token = await self._query(ACQUIRE, self.switch, self.node, self.ttl)
                    if token is not None:
                        self.token, self.valid_until = int(token), t0 + self.ttl - self.margin
                        self.takeovers += 1
                self.last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect; may_act() runs out by itself
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("cluster.db_failed", node=self.node, error=self.last_error)
                await self._disconnect()
            self._report()
            await asyncio.sleep(self._next_wait())

    def _next_wait(self) -> float:
        if self.may_act():
            return self.renew_interval
        return self.poll_interval

    async def _query(self, sql: str, *args: Any) -> Any:
        # A query may take at most what is left of our leadership (or a poll interval):
        # a hung socket is dropped and opened again, never waited on.
        budget = max(self.valid_until - self.clock(), self.poll_interval, 0.1)
        async with asyncio.timeout(budget):
            return await self._conn.fetchval(sql, *args)

    async def _connect(self) -> None:
        import asyncpg  # noqa: PLC0415 - optional extra [postgresql]: imported only for a cluster

        self._conn = await asyncpg.connect(self.url, timeout=self.connect_timeout,
                                           server_settings={"application_name": f"ivr-{self.node}"})
        try:
            await self._conn.execute(SCHEMA)
        except asyncpg.UniqueViolationError:  # another node created it at the same moment
            pass

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # never waits on a socket that may hang

    def _report(self) -> None:
        leading = self.may_act()
        if leading == self._leading:
            return
        self._leading = leading
        role = self.role
        if leading:
            log.warning("cluster.leader", node=self.node, switch=self.switch, token=self.token)
        else:
            log.warning("cluster.standby", node=self.node, switch=self.switch, token=self.token,
                        error=self.last_error or None)
        for callback in list(self._callbacks):
            try:
                callback(role, self.token)
            except Exception:
                log.exception("cluster.callback_failed")


# -- a controller without [cluster] on the pairs' database (issue 17) -----------------------
# A controller without [cluster] acts on every event. On a PostgreSQL where a pair drives
# the same switch, it would send every action a second time; so it refuses to start
# (SwitchTaken), and while it runs it holds the switch's lease itself, under the name
# ``_standalone@<host>`` (no configured node name can start with "_"), so a pair's node
# started beside it refuses too, and a standby could never lead beside it.
STANDALONE = "_standalone@"
RECENT = 60.0  # s: a pair's lease expired less than this ago: the pair is restarting or taking over
START_CHECK_MAX = 2.0  # s the start waits at most for the check (a hung database delays no more)
HOLDER = """
SELECT l.node AS node, l.token AS token, l.expires_at > now() AS live,
       extract(epoch FROM now() - l.expires_at)::float8 AS expired_for,
       {nodes} AS nodes
FROM ivr_lease l WHERE l.switch = $1"""
NODES_OF = "(SELECT string_agg(n.node, ', ' ORDER BY n.node) FROM ivr_nodes n WHERE n.switch = l.switch)"
HOLDER = HOLDER.replace("{nodes}", NODES_OF)


class SwitchTaken(IvrError):
    """Another controller drives this switch on this database: this one must not start."""

    error_id = "switch-taken"


@dataclass(frozen=True)
class Holder:
    """Who holds a switch's lease row (``nodes``: the pair's registered nodes, "" if none)."""

    node: str
    token: int
    live: bool
    expired_for: float  # s since it expired (negative while live)
    nodes: str = ""


def standalone_name(host: str | None = None) -> str:
    return STANDALONE + (host or socket.gethostname())[:100]


def conflict(holder: Holder | None, me: str, switch: str) -> str | None:
    """Why ``me`` (a node's name, or :func:`standalone_name`) must not drive ``switch``
    beside ``holder``; None when it may. A pair's lease held now, or expired less than
    :data:`RECENT` s ago, belongs to a pair; a standalone controller's only while live (its
    own name: this host restarting it, never a conflict)."""
    if holder is None or holder.node == me:
        return None
    alone, other_alone = me.startswith(STANDALONE), holder.node.startswith(STANDALONE)
    if other_alone and holder.live:
        host = holder.node[len(STANDALONE):]
        what = "another controller without [cluster]" if alone else "a controller without [cluster]"
        return (f"switch {switch!r} is driven by {what} on host {host!r} on this database (it holds the "
                f"switch's lease); two controllers on one switch would send every action twice: stop that one, "
                + ("or give both the same [cluster] section" if alone else "or give it this pair's [cluster] section"))
    if alone and not other_alone and (holder.live or holder.expired_for < RECENT):
        pair = f" (its nodes: {holder.nodes})" if holder.nodes else ""
        state = "holds its lease" if holder.live else f"held its lease {holder.expired_for:.0f} s ago"
        return (f"switch {switch!r} is driven by a controller pair on this database: node {holder.node!r} {state}"
                f"{pair}; this controller has no [cluster] section, so it would neither follow the pair's leader "
                f"nor be fenced, and would send every action a second time. Give it [cluster] node = \"<name>\" "
                f"(and the pair's switch) to join the pair as a standby, or its own [cluster] switch name")
    return None


async def read_holder(url: str, switch: str, *, timeout: float) -> Holder | None:
    """The switch's lease row on the database at ``url`` (None: no lease table, or no row)."""
    import asyncpg  # noqa: PLC0415 - optional extra [postgresql]: imported only for PostgreSQL

    async with asyncio.timeout(timeout):
        conn = await asyncpg.connect(url, timeout=timeout, server_settings={"application_name": "ivr-check"})
        try:
            tables = set(await conn.fetchval(
                "SELECT array_agg(tablename::text) FROM pg_tables WHERE tablename IN ('ivr_lease', 'ivr_nodes')") or ())
            if "ivr_lease" not in tables:
                return None
            sql = HOLDER if "ivr_nodes" in tables else HOLDER.replace(NODES_OF, "NULL")
            row = await conn.fetchrow(sql, switch)
        finally:
            conn.terminate()
    return None if row is None else Holder(str(row["node"]), int(row["token"]), bool(row["live"]),
                                           float(row["expired_for"]), str(row["nodes"] or ""))


async def check_start(url: str, switch: str, me: str, *, timeout: float) -> Holder | None:
    """At start: raise :class:`SwitchTaken` when another controller drives ``switch``. A
    database that cannot be asked does not stop the start (a call is never dropped because
    the database failed): logged, and the lease decides from then on."""
    try:
        holder = await read_holder(url, switch, timeout=min(timeout, START_CHECK_MAX))
    except Exception as exc:  # noqa: BLE001 - any failure: start, unchecked
        log.warning("cluster.start_unchecked", switch=switch, node=me, error=f"{type(exc).__name__}: {exc}")
        return None
    if (problem := conflict(holder, me, switch)) is not None:
        log.error("cluster.switch_taken", switch=switch, node=me, holder=holder.node if holder else None)
        raise SwitchTaken(problem, switch=switch, holder=holder.node if holder else None)
    return holder


class Standalone:
    """A controller without [cluster] on PostgreSQL: checked at start, then it holds its
    switch's lease under :func:`standalone_name` for as long as it runs. It acts whether or
    not it holds it (alone by configuration: the database failing never stops it)."""

    def __init__(self, url: str, switch: str, *, host: str | None = None,
                 connect_timeout: float = _DATABASE.connect_timeout, ttl: float = _CLUSTER.lease_ttl,
                 renew_interval: float = _CLUSTER.renew_interval, poll_interval: float = _CLUSTER.poll_interval,
                 margin: float = _CLUSTER.margin) -> None:
        self.url, self.switch, self.connect_timeout = url, switch, connect_timeout
        self.lease = Lease(url, node=standalone_name(host), switch=switch, connect_timeout=connect_timeout,
                           ttl=ttl, renew_interval=renew_interval, poll_interval=poll_interval, margin=margin)
        self.lease.on_change(self._changed)
        self.lost = 0  # times the lease went to another node while this one ran
        self._closing = False
        self._late_check: asyncio.TimerHandle | None = None

    @classmethod
    def from_config(cls, c: ClusterConfig, database: DatabaseConfig) -> Standalone | None:
        if not database.url.startswith(("postgres://", "postgresql://")):
            return None
        return cls(database.url, c.switch, connect_timeout=database.connect_timeout,
                   ttl=c.lease_ttl, renew_interval=c.renew_interval, poll_interval=c.poll_interval, margin=c.margin)

    async def start(self) -> None:
        await check_start(self.url, self.switch, self.lease.node, timeout=self.connect_timeout)
        await self.lease.start()
        # Not holding it a few lease periods on (started unchecked beside a pair, or beside
        # another host's controller started at the same moment): said, loudly, once.
        self._late_check = asyncio.get_running_loop().call_later(3 * self.lease.ttl + 1, self._not_holding)

    def _not_holding(self) -> None:
        if not self.lease.may_act() and not self._closing:
            self.lost += 1
            log.error("cluster.standalone_not_holding", switch=self.switch, node=self.lease.node,
                      error=self.lease.last_error or None,
                      hint="the database does not answer, or another controller holds this switch's lease "
                           "(then two controllers drive it)")

    async def close(self) -> None:
        self._closing = True
        if self._late_check is not None:
            self._late_check.cancel()
        await self.lease.close()

    def _changed(self, role: str, token: int) -> None:
        if role == "standby" and not self._closing:
            self.lost += 1
            log.error("cluster.standalone_lease_lost", switch=self.switch, node=self.lease.node, token=token,
                      error=self.lease.last_error or None,
                      hint="if a pair's node took it, two controllers drive this switch")

    def status(self) -> dict[str, Any]:
        return {"node": self.lease.node, "holds_lease": self.lease.may_act(), "token": self.lease.token,
                "lost": self.lost, **({"error": self.lease.last_error} if self.lease.last_error else {})}
