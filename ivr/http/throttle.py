"""Throttle on wrong tokens, per client address (exponential backoff).

An address may send ``free`` wrong tokens; each further one makes it wait ``base`` s,
doubled every time, at most ``cap`` s. While it waits, every request of that address that
carries a token is refused with 429 and ``Retry-After`` *without the token being
compared*: if a right token were let through, an attacker would still learn at full speed
which guess is right. An address that sends no wrong token for ``forget`` s starts afresh;
a right token (outside a wait) clears its count.

The choice, and its price:

- The key is the TCP peer address (IPv6: its /64, which one host usually owns whole).
  ``X-Forwarded-For`` is not trusted: anyone can write it. So a client elsewhere is
  never held up by someone else's wrong tokens, and the right token keeps working from
  every other address: this is a brake, never a lockout of the API as a whole.
- Clients that share one address (behind a reverse proxy or NAT, or several tabs of one
  browser) share its budget: while that address waits, its right token waits too. The
  wait is at most ``cap`` (5 min) and ends by itself. Behind a proxy, rate-limit at the
  proxy as well.
- At most ``max_clients`` addresses are remembered (least recently seen forgotten first),
  so a flood of addresses cannot grow memory.

At the defaults (5 free, then 1, 2, 4, ... 300 s) one address gets fewer than 300 guesses
a day, against a token of at least 16 characters (:mod:`ivr.config` refuses shorter).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter

log = structlog.get_logger("ivr.http")


@dataclass(frozen=True)
class ThrottlePolicy:
    free: int = 5  # wrong tokens an address may send before it has to wait
    base: float = 1.0  # first wait, s; doubled for each further wrong token
    cap: float = 300.0  # longest wait, s
    forget: float = 900.0  # s without a wrong token after which an address starts afresh
    max_clients: int = 10_000  # addresses remembered


@dataclass
class _Client:
    failures: int = 0
    last: float = 0.0
    until: float = 0.0  # must wait until then


def client_key(remote: str | None) -> str:
    """The throttle's key for a peer address: the address, or its /64 for IPv6."""
    if not remote:
        return "unknown"
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class AuthThrottle:
    def __init__(self, policy: ThrottlePolicy | None = None, *, clock: Callable[[], float] = time.monotonic,
                 registry: CollectorRegistry | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.clients: OrderedDict[str, _Client] = OrderedDict()
        self.failures = Counter("ivr_http_auth_failures", "Requests with a wrong HTTP API token",
                                registry=self.registry)
        self.refused = Counter("ivr_http_auth_throttled", "Requests refused (429) because their "
                               "address sent too many wrong tokens", registry=self.registry)

    def _get(self, key: str) -> _Client | None:
        entry = self.clients.get(key)
        if entry is not None and self.clock() - entry.last > self.policy.forget and self.clock() >= entry.until:
            del self.clients[key]
            return None
        return entry

    def retry_after(self, key: str) -> int:
        """Whole seconds the address must still wait (0: it may try); counts a refusal."""
        entry = self._get(key)
        if entry is None:
            return 0
        wait = entry.until - self.clock()
        if wait <= 0:
            return 0
        self.refused.inc()
        return max(1, math.ceil(wait))

    def failed(self, key: str) -> None:
        """A wrong token from this address."""
        self.failures.inc()
        now = self.clock()
        entry = self._get(key) or _Client()
        entry.failures += 1
        entry.last = now
        over = entry.failures - self.policy.free
        if over > 0:
            wait = min(self.policy.cap, self.policy.base * 2 ** min(over - 1, 64))
            entry.until = now + wait
            log.warning("http.auth_throttled", client=key, wrong_tokens=entry.failures, wait=wait)
        self.clients[key] = entry
        self.clients.move_to_end(key)
        while len(self.clients) > self.policy.max_clients:
            self.clients.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """A right token from this address: its count starts afresh."""
        self.clients.pop(key, None)
