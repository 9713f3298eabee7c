"""Nothing twice, nothing lost: each action a rule takes is sent once per switch.

Every action a rule takes (ring alarm, reminder, hold choices, transfer step, release,
apology) has an idempotency key (switch, call, rule, step). In a controller pair
([cluster]) :meth:`Once.run` writes the key to PostgreSQL (table ``ivr_action``, owned by
the cluster like ``ivr_lease``) *before* the action is sent:

* the insert is fenced: it happens only while this node's token is the lease's current
  one and the lease has not expired (one statement, PostgreSQL's clock), so a node that
  lost the lease cannot claim anything;
* insert-if-absent: a key already there means another node (the old leader) sent it,
  and it is skipped (``"skipped"``);
* a standby, and a leader whose claim was fenced out, keeps the action pending with the
  time it fell due; when this node becomes the leader, :meth:`Once.flush` claims each
  pending action in due order and sends those nobody sent, at once, late
  (``"late"``). Pending actions older than ``late_limit`` s are dropped and counted
  (``expired``): an alarm a minute late helps nobody.
* the database failing under a leader: the action is sent anyway and counted
  (``unrecorded``): a call is never held up by the database; the price is that a takeover
  in the next seconds may send it again.

Claims go over a small pool of their own (``[cluster] claim_connections``, default 4;
never the records' connections), so they neither wait on each other's round trips nor
behind record writes. A claim may take ``[cluster] claim_timeout`` s in all (waiting for
a connection of the pool, then its statements): past it the action is sent anyway,
``unrecorded``, and the reason is counted (``busy``: every connection of the pool was
taken; ``slow``: the database did not answer in time; ``error``: it failed), logged
``once.unrecorded``. A connection whose statement timed out or failed is reused only
once the server has acknowledged the statement's cancellation, else closed (never reused
half-way through a reply); the pool opens another at the next claim.

Bounds: an action whose key was written by a leader that died before sending it is lost
(at most once by design: the key is written first). Without [cluster] (SQLite, one node)
:class:`Once` sends at once and keeps nothing: there is no other node to repeat it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.cluster import Lease
from ivr.sections import ClusterConfig, DatabaseConfig

log = structlog.get_logger("ivr.once")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ivr_action (
    switch text NOT NULL,
    key text NOT NULL,
    node text NOT NULL,
    token bigint NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (switch, key)
)"""
# Written only under the current, unexpired lease of this node (the fencing token).
CLAIM = """
INSERT INTO ivr_action (switch, key, node, token)
SELECT $1, $2, $3, $4
WHERE EXISTS (SELECT 1 FROM ivr_lease
              WHERE switch = $1 AND node = $3 AND token = $4 AND expires_at >= now())
ON CONFLICT (switch, key) DO NOTHING
RETURNING token"""
SENT = "SELECT node FROM ivr_action WHERE switch = $1 AND key = $2"
PRUNE = "DELETE FROM ivr_action WHERE sent_at < now() - interval '2 days'"
PRUNE_EVERY = 3600.0  # s between prunes by one node (and at each connect)

Send = Callable[[], Any]  # a plain function, or one returning an awaitable
_CLUSTER, _DATABASE = ClusterConfig(), DatabaseConfig()  # the defaults below are theirs


def action_key(call: str, rule: str, step: str | int) -> str:
    """The key of one action of one call (the switch is the table's other column)."""
    return f"{call}/{rule}/{step}"


@dataclass
class _Pending:
    key: str
    send: Send
    due: float  # this node's monotonic clock when the rule's machine fired it
    still: Callable[[], bool] | None


class Once:
    """One gate for every keyed action. ``lease`` None: no cluster, send at once."""

    def __init__(self, lease: Lease | None = None, url: str = "", *, late_limit: float = _CLUSTER.late_limit,
                 max_pending: int = 10_000, clock: Callable[[], float] = time.monotonic,
                 connect_timeout: float = _DATABASE.connect_timeout, claim_timeout: float = _CLUSTER.claim_timeout,
                 connections: int = _CLUSTER.claim_connections) -> None:
        self.lease, self.url, self.late_limit, self.max_pending = lease, url, late_limit, max_pending
        self.clock, self.connect_timeout, self.claim_timeout = clock, connect_timeout, claim_timeout
        self.connections = connections
        self.counts = {"sent": 0, "skipped": 0, "pending": 0, "late": 0, "expired": 0, "unrecorded": 0}
        self.unrecorded_why = {"busy": 0, "slow": 0, "error": 0}  # why a leader sent without a key
        self.in_flight = 0  # claims holding a connection of the pool now
        self._asking = 0  # claims waiting for a connection of the pool
        self._pending: dict[str, _Pending] = {}
        self._pool: Any = None
        self._opening: asyncio.Future[None] | None = None  # the pool's opening; claims run side by side
        self._flushing: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pruned = float("-inf")
        if lease is not None:
            lease.on_change(self._role_changed)

    @classmethod
    def from_config(cls, c: ClusterConfig, database: DatabaseConfig, lease: Lease | None) -> Once:
        if lease is None:
            return cls()
        return cls(lease, database.url, late_limit=c.late_limit, claim_timeout=c.claim_timeout,
                   connections=c.claim_connections, connect_timeout=database.connect_timeout)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def claims(self) -> dict[str, Any]:
        """The pool's state and why actions went unrecorded (/healthz ``cluster.claims``)."""
        return {"connections": self.connections, "in_flight": self.in_flight,
                "open": self._pool.get_size() if self._pool is not None else 0, **self.unrecorded_why}

    # -- the one call every feature makes --------------------------------------------
    async def run(self, key: str, send: Send, *, still: Callable[[], bool] | None = None,
                  here: bool = False) -> str:
        """Send ``send()`` once for ``key`` on this switch. Returns ``"sent"``,
        ``"skipped"`` (already sent by a node), ``"pending"`` (not the leader: kept for a
        takeover) or ``"unrecorded"`` (sent without a key: the database down, or ``here``).
        ``still()``, when given, is asked before a late send: False drops the action (the
        call moved on). ``here``: the action is on a call whose FastAGI session runs on
        this node (no other node can play it): sent even when this node has lost the
        lease (cut from the database), as the AMI gate lets its actions through."""
        if self.lease is None:
            await _call(send)
            return self._count("sent")
        item = _Pending(key, send, self.clock(), still)
        if not self.lease.may_act():
            if here:
                await _call(send)
                return self._count("unrecorded")
            return self._keep(item)
        return await self._claim_and_send(item, late=False)

    def submit(self, key: str, send: Send, *, still: Callable[[], bool] | None = None) -> None:
        """:meth:`run` from synchronous code (a timer callback, an alarm sink)."""
        if self.lease is None:  # no cluster: not even a task
            result = send()
            if inspect.isawaitable(result):
                self._spawn(result)
            self._count("sent")
            return
        self._spawn(self.run(key, send, still=still))

    # -- takeover ---------------------------------------------------------------------
    def _role_changed(self, role: str, token: int) -> None:
        if role == "leader" and self._pending and (self._flushing is None or self._flushing.done()):
            self._flushing = self._spawn(self.flush())

    async def flush(self) -> int:
        """The new leader: claim and send, in due order, every pending action nobody sent."""
        sent = 0
        self._expire()
        for item in sorted(self._pending.values(), key=lambda p: p.due):
            if self.lease is None or not self.lease.may_act():
                break
            self._pending.pop(item.key, None)
            if item.still is not None and not item.still():
                continue
            if await self._claim_and_send(item, late=True) in ("late", "unrecorded"):
                sent += 1
        return sent

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
            await asyncio.gather(self._opening, return_exceptions=True)
        await self._disconnect()

    # -- internals --------------------------------------------------------------------
    async def _claim_and_send(self, item: _Pending, *, late: bool) -> str:
        assert self.lease is not None
        try:
            claimed, sent_by = await self._claim(item.key)
        except Exception as exc:  # noqa: BLE001 - the call goes on; counted, logged
            why = exc.args[0] if isinstance(exc, _Unrecorded) else "error"
            cause = exc.__cause__ if isinstance(exc, _Unrecorded) and exc.__cause__ else exc
            log.warning("once.unrecorded", key=item.key, why=why, error=f"{type(cause).__name__}: {cause}",
                        in_flight=self.in_flight)
            if not self.lease.may_act():
                return self._keep(item)
            self.unrecorded_why[why] += 1
            await _call(item.send)
            return self._count("unrecorded")
        if claimed:
            if late:
                log.info("once.late", key=item.key, late=round(self.clock() - item.due, 3))
            await _call(item.send)
            return self._count("late" if late else "sent")
        if sent_by is not None:
            log.debug("once.skipped", key=item.key, sent_by=sent_by)
            return self._count("skipped")
        return self._keep(item)  # fenced out: the lease has moved on

    async def _claim(self, key: str) -> tuple[bool, str | None]:
        """One claim: a connection of the pool (opened first if need be), then the fenced
        insert (and, when it inserted nothing, who sent it), all within ``claim_timeout``
        s. Raises :class:`_Unrecorded` with the reason."""
        assert self.lease is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.claim_timeout
        if self._pool is None:
            if self._opening is None or self._opening.done():  # one opening at a time, for every claim
                self._opening = asyncio.ensure_future(self._connect())
            try:  # the opening goes on past this claim's bound (never cut half-way): the next claim finds it
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(self._opening)
            except TimeoutError as exc:
                raise _Unrecorded("slow") from exc
        pool = self._pool
        busy = self.in_flight + self._asking >= self.connections  # every connection taken or promised
        self._asking += 1
        try:
            conn = await pool.acquire(timeout=max(deadline - loop.time(), 0.001))
        except TimeoutError as exc:
            raise _Unrecorded("busy" if busy else "slow") from exc
        finally:
            self._asking -= 1
        self.in_flight += 1
        failed = True
        try:
            async with asyncio.timeout_at(deadline):
                if self.clock() - self._pruned >= PRUNE_EVERY:  # keys are needed for a takeover, not for days
                    self._pruned = self.clock()
                    await conn.execute(PRUNE)
                lease = self.lease
                if await conn.fetchval(CLAIM, lease.switch, key, lease.node, lease.token) is not None:
                    failed = False
                    return True, None
                sent_by = await conn.fetchval(SENT, lease.switch, key)
                failed = False
                return False, sent_by
        except TimeoutError as exc:
            raise _Unrecorded("slow") from exc
        finally:
            self.in_flight -= 1
            if failed:  # in the background: the action goes now, not after the statement's cancellation
                self._spawn(_release(pool, conn))
            else:
                await pool.release(conn, timeout=0.1)

    def _keep(self, item: _Pending) -> str:
        self._expire()
        if item.key not in self._pending:
            if len(self._pending) >= self.max_pending:
                self._count("expired")
                return "expired"
            self._pending[item.key] = item
        return self._count("pending")

    def _expire(self) -> None:
        limit = self.clock() - self.late_limit
        for key in [k for k, p in self._pending.items() if p.due < limit]:
            del self._pending[key]
            self._count("expired")

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    async def _connect(self) -> None:
        import asyncpg  # noqa: PLC0415 - optional extra [postgresql]: imported only for a cluster

        async with asyncio.timeout(self.connect_timeout):
            pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.connections, timeout=self.connect_timeout,
                reset=_no_reset, server_settings={"application_name": "ivr-once"})
            try:
                await pool.execute(SCHEMA)
            except asyncpg.UniqueViolationError:  # another node created it at the same moment
                pass
            except BaseException:
                pool.terminate()
                raise
        self._pool = pool

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("once.send_failed", error=repr(task.exception()))

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()  # never waits on a socket that may hang


class _Unrecorded(Exception):
    """A claim that could not be made in time: ``args[0]`` is ``"busy"`` or ``"slow"``."""


async def _release(pool: Any, conn: Any) -> None:
    """A connection whose statement was cut (timeout, error): asyncpg asks the server to
    cancel it and reuses the connection once it has; a cancellation not acknowledged
    within 0.5 s (a hung socket) closes it. Never reused half-way through a reply."""
    try:
        await pool.release(conn, timeout=0.5)
    except Exception:  # noqa: BLE001 - closed already by asyncpg; the pool opens another
        conn.terminate()


async def _no_reset(conn: Any) -> None:
    """A claim leaves nothing on its connection to reset: no round trip on release."""


async def _call(send: Send) -> None:
    result = send()
    if inspect.isawaitable(result):
        await result

