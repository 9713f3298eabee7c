"""Any node answers the API (issue 17): a changing request that this node may not carry
out goes to the leader of the switch it concerns, and that leader's answer comes back.

Every node of a controller pair publishes where its API is (``[cluster] advertise``) in
the ``ivr_nodes`` table of the shared PostgreSQL when its records open; the leader of a
switch is the node holding that switch's ``ivr_lease`` row (``ivr/cluster.py``), unexpired
by PostgreSQL's clock. The switch a request concerns is the switch of its call
(``/api/calls/{call_id}/...``) or call-back (``/api/callbacks/{callback_id}...``) on record,
else this node's own.

A request that this node may carry out (it leads the switch concerned, or the request was
forwarded to it already: never twice) runs here. Otherwise it is sent on with the same
method, path, query and body, the caller's bearer token, ``Content-Type`` and
``Idempotency-Key``; no redirect is followed; the answer must come within
``[cluster] forward_timeout`` s, be JSON and at most :data:`MAX_ANSWER` bytes, and only
its status and JSON body are passed back (with ``X-Ivr-Answered-By``). When the leader is
unknown, has no address, is unreachable or answers badly: 503 (502 for a bad answer) with
an ``error_id`` saying which, and the details of where the leader is.

Read-only requests are never forwarded: every node reads the same database.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from ivr.http.auth import request_token
from ivr.http.keys import SERVICES
from ivr.records.db import Database, Row, Tx
from ivr.sections import ClusterConfig
from ivr.web.errors import ApiError
from ivr.web.params import CALL_ID

log = structlog.get_logger("ivr.forward")

CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORWARDED = "X-Ivr-Forwarded"  # the node that forwarded it: the receiver never forwards again
ANSWERED_BY = "X-Ivr-Answered-By"
PASSED_ON = ("Content-Type", "Idempotency-Key")
MAX_ANSWER = 1 << 20  # bytes of a leader's answer
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS ivr_nodes (
    switch text NOT NULL,
    node text NOT NULL,
    api_url text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (switch, node)
)"""
REGISTER = """
INSERT INTO ivr_nodes (switch, node, api_url, updated_at) VALUES (?, ?, ?, now())
ON CONFLICT (switch, node) DO UPDATE SET api_url = EXCLUDED.api_url, updated_at = now()"""
LEADER = """
SELECT l.node AS node, l.token AS token, l.expires_at > now() AS live, n.api_url AS api_url
FROM ivr_lease l LEFT JOIN ivr_nodes n ON n.switch = l.switch AND n.node = l.node
WHERE l.switch = ?"""


class LeaderUnavailable(ApiError):
    """The leader of the switch concerned cannot carry the request out."""

    status, error_id = 503, "leader-unknown"


@dataclass(frozen=True)
class Leader:
    switch: str
    node: str | None = None  # None: no node ever led this switch
    api_url: str | None = None  # None: that node published no address
    live: bool = False  # its lease has not expired

    def where(self) -> dict[str, Any]:
        return {"switch": self.switch, "leader": self.node, "api_url": self.api_url, "lease_live": self.live}


class LeaderLookup(Protocol):
    """The reads the forwarder makes on the records database (a :class:`~ivr.records.db.Database`)."""

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None: ...


class Forwarder:
    """This node's side: ``acting()`` says whether it leads its own ``switch`` now;
    ``db()`` gives the records database (None while it is away)."""

    def __init__(self, *, switch: str, node: str, advertise: str, acting: Callable[[], bool],
                 db: Callable[[], LeaderLookup | None], timeout: float = ClusterConfig().forward_timeout,
                 on_outcome: Callable[[str], None] | None = None) -> None:
        self.switch, self.node, self.advertise = switch, node, advertise
        self.acting, self.db, self.timeout = acting, db, timeout
        self.on_outcome = on_outcome  # "answered" / "failed", for the metrics
        self.forwarded = 0  # requests carried out by another node
        self.failed = 0  # requests answered 502/503 because the leader could not be asked
        self._session: aiohttp.ClientSession | None = None

    def _count(self, outcome: str) -> None:
        if outcome == "answered":
            self.forwarded += 1
        else:
            self.failed += 1
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def register(self, db: Database) -> None:
        """Publish this node's API address (when the records open: the table may be new)."""
        if db.dialect != "postgresql":
            return

        async def run(tx: Tx) -> None:
            await tx.execute(NODES_SCHEMA)  # the standbys look the leader up in it, advertised or not
            if self.advertise:
                await tx.execute(REGISTER, (self.switch, self.node, self.advertise))

        try:
            await db.run(run)
            log.info("cluster.advertised", node=self.node, switch=self.switch, api_url=self.advertise)
        except Exception as exc:  # noqa: BLE001 - published again when the records reopen
            log.warning("cluster.advertise_failed", error=str(exc))

    async def leader(self, switch: str) -> Leader:
        db = self.db()
        if db is None:
            raise LeaderUnavailable(f"switch {switch}: the leader cannot be looked up, the database is away",
                                    switch=switch)
        try:
            row = await db.fetchone(LEADER, (switch,))
        except Exception as exc:  # noqa: BLE001 - no lease table yet, or the database failed: said in the log
            log.warning("api.leader_lookup_failed", switch=switch, error=str(exc))
            raise LeaderUnavailable(f"switch {switch}: the leader cannot be looked up (no lease on record, "
                                    "or the database failed)", switch=switch) from None
        if row is None:
            return Leader(switch)
        node = str(row["node"]) if NAME.match(str(row["node"])) else None
        return Leader(switch, node, row["api_url"], bool(row["live"]))

    async def switch_of(self, request: web.Request) -> str:
        """The switch the request concerns: its call's or call-back's on record, else ours."""
        info = request.match_info
        db = self.db()
        for key, sql in (("call_id", "SELECT switch FROM calls WHERE call_id = ?"),
                         ("callback_id", "SELECT switch FROM callbacks WHERE callback_id = ?")):
            value = info.get(key)
            if value is not None and CALL_ID.match(value) and db is not None:
                try:
                    row = await db.fetchone(sql, (value,))
                except Exception:  # noqa: BLE001 - not known: our own switch
                    return self.switch
                return str(row["switch"]) if row is not None else self.switch
        return self.switch

    async def forward(self, request: web.Request, leader: Leader) -> web.Response:
        if leader.node is None or not leader.live:
            self._count("failed")
            raise LeaderUnavailable(
                f"switch {leader.switch} has no leader now" + (f" (the last was {leader.node})" if leader.node else ""),
                details=leader.where())
        if not leader.api_url:
            self._count("failed")
            raise LeaderUnavailable(
                f"switch {leader.switch}: its leader {leader.node} publishes no API address ([cluster] advertise)",
                error_id="leader-no-address", details=leader.where())
        headers = {FORWARDED: self.node, "Accept-Encoding": "identity"}
        token = request_token(request)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for name in PASSED_ON:
            value = request.headers.get(name)
            if value is not None and value.isascii() and value.isprintable() and len(value) <= 200:
                headers[name] = value
        body = await request.read()
        url = leader.api_url.rstrip("/") + str(request.rel_url)
        try:
            async with asyncio.timeout(self.timeout), self.session().request(
                    request.method, url, data=body, headers=headers, allow_redirects=False) as resp:
                status, content_type = resp.status, resp.content_type
                raw = await _bounded(resp.content)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._count("failed")
            reason = f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) \
                else f"{type(exc).__name__}: {exc}"
            raise LeaderUnavailable(f"switch {leader.switch}: its leader {leader.node} at {leader.api_url} "
                                    f"is unreachable ({reason})", error_id="leader-unreachable",
                                    details=leader.where()) from None
        answer = self._checked(leader, status, content_type, raw)
        self._count("answered")
        log.info("api.forwarded", method=request.method, path=request.path, switch=leader.switch,
                 leader=leader.node, status=status)
        return web.json_response(answer, status=status, headers={ANSWERED_BY: leader.node})

    def _checked(self, leader: Leader, status: int, content_type: str, raw: bytes) -> Any:
        problem = None
        if not 200 <= status <= 599 or 300 <= status < 400:
            problem = f"status {status}" + (" (a redirect, not followed)" if 300 <= status < 400 else "")
        elif len(raw) > MAX_ANSWER:
            problem = f"more than {MAX_ANSWER} bytes"
        elif content_type != "application/json":
            problem = f"not JSON ({content_type[:60]!r})"
        if problem is None:
            try:
                return json.loads(raw)
            except ValueError:
                problem = "not valid JSON"
        self._count("failed")
        raise ApiError(f"switch {leader.switch}: its leader {leader.node} answered badly: {problem}",
                       status=502, error_id="leader-bad-answer", details=leader.where())

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Never the environment's proxies: the leader is on the operators' own network.
            # Never decompressed: a small compressed answer could inflate past any bound.
            self._session = aiohttp.ClientSession(trust_env=False, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> dict[str, Any]:
        return {"advertise": self.advertise or None, "forwarded": self.forwarded, "failed": self.failed}


async def _bounded(content: aiohttp.StreamReader) -> bytes:
    """The whole body, or its first MAX_ANSWER + 1 bytes (a larger one is refused)."""
    chunks, size = [], 0
    async for chunk in content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            break
    return b"".join(chunks)


@web.middleware
async def forward_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After the token check: a changing API request this node may not carry out goes to
    the leader of the switch it concerns."""
    forwarder: Forwarder | None = request.app[SERVICES].forwarder
    if (forwarder is None or request.method not in CHANGING or not request.path.startswith("/api/")
            or request.match_info.http_exception is not None):
        return await handler(request)
    switch = await forwarder.switch_of(request)
    if switch == forwarder.switch and forwarder.acting():
        return await handler(request)
    came_from = request.headers.get(FORWARDED)
    if came_from is not None:  # forwarded once already: never again (no loops)
        leader = await forwarder.leader(switch)
        raise LeaderUnavailable(f"switch {switch}: this node ({forwarder.node}) was asked by "
                                f"{came_from[:63]} as the leader, and is not it any more",
                                error_id="not-leader", details=leader.where())
    return await forwarder.forward(request, await forwarder.leader(switch))
