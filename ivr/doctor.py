"""``ivr doctor``: verify a live switch against the deployment checklist.

Each check says what it found and, when it fails, what to do. The checks run against the
real switch with the controller's own AMI user, so they prove what the controller will
actually be allowed to do:

1. AMI reachable, and the login accepted.
2. The AMI user may run every action the controller needs, and nothing dangerous
   (``Command``, config writes, dialplan edits, module loads...): least privilege.
3. The ``ivr-inbound`` context is loaded.
4. Asterisk reaches the controller's FastAGI (a Local call into ``ivr-doctor`` runs
   the ``doctor`` route through ``[ivr-agi]``, every address of ``IVR_AGI`` in turn; if no
   controller is running, the doctor listens itself).
5. Every prompt of every configured language is in Asterisk's sound path (checked by
   Asterisk itself: ``STREAM FILE`` from the end of each file, which plays nothing).
6. The tone zone the controller counts rings with is the one the dialplan sets.
7. With a ``[cluster] switch`` name of its own, the switch's Asterisk has a ``systemname``
   (AMI ``CoreSettings`` ``SystemName``): call ids are Linkedids, bare ``<epoch>.<n>``
   without it, and two switches on one database would make the same ones.
8. A node of a controller pair (``[cluster] node``): this node answers its ``/healthz`` as
   a healthy leader or standby (AMI connected); some node leads the switch (its
   ``ivr_lease`` row in PostgreSQL unexpired and renewed within the lease's ttl, by
   PostgreSQL's clock), and that leader's API (its address in ``ivr_nodes``) answers
   ``role: leader``. No node leading is a failure, named as such.
9. On PostgreSQL, no other controller drives this switch on the database: a controller
   without [cluster] beside a pair of the same switch (or a pair's node beside one) would
   send every action twice; ``ivr run`` refuses to start then (``ivr.cluster.conflict``).
"""

from __future__ import annotations

import asyncio
import errno
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from ivr.agi.channel import AgiChannel, AgiError
from ivr.agi.server import FastAgiServer
from ivr.ami.connection import AmiConnection, AmiError, Backoff
from ivr.ami.link import AmiLink
from ivr.catalog import load_catalog
from ivr.cluster import conflict, read_holder, standalone_name
from ivr.feature import AgiRoute, Feature
from ivr.resources import prompts_source_dir
from ivr.sections import Config

# What the controller sends over AMI, and what it must not be able to.
# (tests/unit/test_doctor.py checks this covers every action the package sends.)
NEEDED_ACTIONS = frozenset({
    "Originate", "Redirect", "Hangup", "UserEvent", "CoreShowChannels", "Getvar",
    "Setvar", "ShowDialPlan", "PlayDTMF", "Ping", "Status", "QueueStatus", "CoreSettings",
})
DANGEROUS_ACTIONS = frozenset({
    "Command", "UpdateConfig", "GetConfig", "GetConfigJSON", "CreateConfig",
    "DialplanExtensionAdd", "DialplanExtensionRemove", "ModuleLoad", "Reload",
})
FAR_OFFSET = 100_000_000  # samples: STREAM FILE from here plays nothing but opens the file
# The lease of a switch and where its holder's API is (ivr/cluster.py, ivr/http/forward.py),
# by PostgreSQL's clock.
LEASE = """
SELECT l.node AS node, l.token AS token, l.expires_at > now() AS live,
       extract(epoch FROM now() - l.renewed_at)::float8 AS renewed_ago,
       extract(epoch FROM now() - l.expires_at)::float8 AS expired_ago,
       (SELECT n.api_url FROM ivr_nodes n WHERE n.switch = l.switch AND n.node = l.node) AS api_url
FROM ivr_lease l WHERE l.switch = $1"""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def prompt_ids(config: Config) -> dict[str, list[str]]:
    return {
        lang: sorted(load_catalog(prompts_source_dir(config.prompts.source), lang).ids)
        for lang in config.switch.languages
    }


def build_doctor(config: Config) -> Feature[None]:
    """The doctor's FastAGI route as a feature of the app."""
    return Feature("doctor", None, agi_routes={"doctor": doctor_route(config)})


def doctor_route(config: Config) -> AgiRoute:
    """The FastAGI route ``doctor``: Asterisk checks each prompt file exists."""

    async def handle(call: AgiChannel) -> None:
        missing: list[str] = []
        for lang, ids in prompt_ids(config).items():
            for pid in ids:
                sound = f"{config.prompts.sound_prefix}/{lang}/{pid}"
                try:
                    await call.stream_file(sound, offset=FAR_OFFSET)
                except AgiError:
                    missing.append(sound)
        result = "ok" if not missing else f"missing {len(missing)}: " + " ".join(missing[:20])
        await call.set_variable("IVR_DOCTOR", result)

    return handle


class _Doctor:
    def __init__(self, config: Config, timeout: float) -> None:
        self.config = config
        self.timeout = timeout
        self.checks: list[Check] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    async def run(self) -> list[Check]:
        await self._one_controller()
        ami = AmiConnection.from_config(self.config.ami, backoff=Backoff(initial=0.2, maximum=0.5))
        await ami.start()
        try:
            try:
                await ami.wait_connected(self.timeout)
            except AmiError as exc:
                self.add("AMI login", False, f"{exc}. Check [ami] host/port/username and the secret "
                         "(IVR_AMI_SECRET, the credential ami-secret or [ami] secret_file), and manager.conf permit=")
                return self.checks
            self.add("AMI login", True, f"{self.config.ami.username}@{self.config.ami.host}:{self.config.ami.port}")
            await self._privileges(ami)
            await self._system_name(ami)
            await self._inbound_context(ami)
            await self._agi_and_prompts(ami)
            await self._tone_zone(ami)
        finally:
            await ami.close()
        if self.config.cluster.node:
            await self._cluster()
        return self.checks

    # -- a controller pair ------------------------------------------------------------
    async def _health(self, url: str) -> dict[str, Any] | None:
        """A node's ``/healthz`` (its JSON, whatever the status), or None if it does not answer."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s, \
                    s.get(f"{url.rstrip('/')}/healthz", allow_redirects=False) as r:
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def _lease(self) -> dict[str, Any] | None:
        import asyncpg  # noqa: PLC0415 - optional extra [postgresql]: only a pair's doctor needs it

        conn = await asyncpg.connect(self.config.database.url, timeout=self.timeout)
        try:
            try:
                row = await conn.fetchrow(LEASE, self.config.cluster.switch, timeout=self.timeout)
            except asyncpg.UndefinedTableError:  # no node ever started with this database
                return None
        finally:
            await conn.close()
        return None if row is None else dict(row)

    async def _cluster(self) -> None:
        c, http = self.config.cluster, self.config.http
        host = "127.0.0.1" if http.host in ("", "0.0.0.0", "::") else http.host  # noqa: S104 - compared, not bound
        own_url = f"http://{'[' + host + ']' if ':' in host else host}:{http.port}"
        own = await self._health(own_url)
        role = (own or {}).get("role")
        ami_ok = bool((own or {}).get("checks", {}).get("ami", {}).get("ok"))
        if own is None:
            self.add("cluster node", False, f"node {c.node!r} does not answer at {own_url}/healthz: start it "
                     "(`ivr run`); a pair needs every node running to survive a death")
        elif role in ("leader", "standby") and ami_ok:
            self.add("cluster node", True, f"node {c.node!r} is a healthy {role} of switch {c.switch!r} "
                     "(AMI connected)")
        else:
            self.add("cluster node", False, f"node {c.node!r} answers role={role!s:.20}, AMI "
                     f"{'connected' if ami_ok else 'not connected'}: see its log and /healthz")
        await self._leader(own_url, role)

    async def _leader(self, own_url: str, own_role: object) -> None:  # from the node's /healthz JSON
        c = self.config.cluster
        try:
            lease = await self._lease()
        except Exception as exc:  # noqa: BLE001 - any failure to read the lease is the finding
            self.add("cluster leader", False, f"cannot read the lease of switch {c.switch!r} in PostgreSQL "
                     f"({type(exc).__name__}: {exc}): check [database] url and that PostgreSQL is up")
            return
        if lease is None:
            self.add("cluster leader", False, f"no node leads switch {c.switch!r}: none has ever held its lease; "
                     "start the nodes (`ivr run` with [cluster] and the same PostgreSQL)")
            return
        node, token = str(lease["node"]), lease["token"]
        if not lease["live"]:
            self.add("cluster leader", False, f"no node leads switch {c.switch!r}: the lease of node {node!r} "
                     f"(token {token}) expired {lease['expired_ago']:.1f} s ago; every node is down or cut off "
                     "from PostgreSQL: see the nodes' logs")
            return
        fresh = lease["renewed_ago"] <= c.lease_ttl
        url = str(lease["api_url"] or "") or (own_url if node == c.node else "")
        said = f"node {node!r} leads switch {c.switch!r} (token {token}, lease renewed {lease['renewed_ago']:.2f} s ago"
        if not fresh:
            self.add("cluster leader", False, f"{said}, more than its ttl {c.lease_ttl} s): the lease is stale; "
                     "check PostgreSQL's load and the leader's log")
            return
        if not url:
            self.add("cluster leader", False, f"{said}), but it published no API address: set [cluster] advertise "
                     "on that node so the others (and this check) reach it")
            return
        health = await self._health(url)
        if health is None or health.get("role") != "leader":
            answer = "no answer" if health is None else f"role={health.get('role')!s:.20}"
            self.add("cluster leader", False, f"{said}), but its API at {url} gives {answer}: check that node "
                     "and the network between the nodes")
            return
        self.add("cluster leader", True, f"{said}); its API at {url} answers role=leader"
                 + (" (this node)" if node == c.node and own_role == "leader" else ""))

    async def _privileges(self, ami: AmiConnection) -> None:
        reply = await ami.action({"Action": "ListCommands"}, self.timeout)
        allowed = {key for key in dict(reply) if key not in ("Response", "ActionID", "content")}
        missing = sorted(NEEDED_ACTIONS - allowed)
        excess = sorted(DANGEROUS_ACTIONS & allowed)
        if missing:
            self.add("AMI privileges", False, "cannot run " + ", ".join(missing)
                     + ": manager.conf [ivr] needs write = call,originate,user,reporting")
        elif excess:
            self.add("AMI privileges", False, "more privilege than needed: may run " + ", ".join(excess)
                     + "; give the controller's user only read = call,user,agent,dialplan,reporting "
                     "and write = call,originate,user,reporting")
        else:
            self.add("AMI privileges", True, f"all {len(NEEDED_ACTIONS)} needed actions, nothing dangerous")

    async def _one_controller(self) -> None:
        """On PostgreSQL: who holds this switch's lease, and whether this controller may run
        beside it (the check ``ivr run`` makes at start)."""
        db, c = self.config.database, self.config.cluster
        if not db.url.startswith(("postgres://", "postgresql://")):
            return
        me = c.node or standalone_name()
        try:
            holder = await read_holder(db.url, c.switch, timeout=min(self.timeout, db.connect_timeout))
        except Exception as exc:  # noqa: BLE001 - said in the check
            self.add("one controller per switch", False, f"cannot read the switch's lease on the database "
                     f"({type(exc).__name__}: {exc}): check [database] url")
            return
        if (problem := conflict(holder, me, c.switch)) is not None:
            self.add("one controller per switch", False, problem)
        elif holder is None:
            self.add("one controller per switch", True, f"switch {c.switch!r}: no controller holds it yet")
        else:
            state = "live" if holder.live else f"expired {holder.expired_for:.0f} s ago"
            self.add("one controller per switch", True, f"switch {c.switch!r}: its lease is {holder.node!r}'s "
                     f"({state}, token {holder.token}){' (this controller)' if holder.node == me else ''}")

    async def _system_name(self, ami: AmiLink) -> None:
        """A switch of its own name needs an Asterisk ``systemname`` (README "Many switches")."""
        switch = self.config.cluster.switch
        if switch == "default":  # one switch: its bare call ids collide with nobody's
            return
        try:
            reply = await ami.action({"Action": "CoreSettings"}, self.timeout)
        except AmiError as exc:
            self.add("switch systemname", False, f"cannot ask the switch (CoreSettings: {exc}): "
                     "manager.conf [ivr] needs write = call,originate,user,reporting")
            return
        name = str(reply.get("SystemName") or "")
        if name:
            self.add("switch systemname", True, f"[cluster] switch {switch!r} on Asterisk systemname "
                     f"{name[:40]!r}: its call ids carry it")
            return
        self.add("switch systemname", False, f"[cluster] switch {switch!r}, but this Asterisk has no systemname: "
                 "its call ids are bare <epoch>.<n> and another switch on the same database makes the same "
                 f"ones; set `systemname = {switch}` in asterisk.conf [options] (read at start: restart Asterisk)")

    async def _getvar(self, ami: AmiConnection, name: str) -> str:
        try:
            reply = await ami.action({"Action": "Getvar", "Variable": name}, self.timeout)
        except AmiError:
            return ""
        return str(reply.get("Value") or "")

    async def _inbound_context(self, ami: AmiConnection) -> None:
        try:
            replies = await ami.action({"Action": "ShowDialPlan", "Context": "ivr-inbound"},
                                       self.timeout, as_list=True)
        except AmiError as exc:
            self.add("ivr-inbound context", False, f"not loaded ({exc}): add `#include ivr-inbound.conf` "
                     "to extensions.conf and run `dialplan reload`")
            return
        extens = {m.get("Extension") for m in replies if m.get("Event") == "ListDialplan"
                  and m.get("Context") == "ivr-inbound"}
        self.add("ivr-inbound context", "s" in extens,
                 "loaded" if "s" in extens else "loaded but has no 's' extension: use the shipped ivr-inbound.conf")

    async def _agi_and_prompts(self, ami: AmiConnection) -> None:
        own = await _start_own_agi(self.config)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def on_user_event(event: Any) -> None:
            if event.get("UserEvent") == "IvrDoctor" and not done.done():
                done.set_result(event)

        unsubscribe = ami.subscribe("UserEvent", on_user_event)
        budget = self.timeout + 0.2 * sum(len(v) for v in prompt_ids(self.config).values())
        try:
            await ami.action({"Action": "Originate", "Channel": "Local/wait@ivr-doctor",
                              "Context": "ivr-doctor", "Exten": "s", "Priority": "1",
                              "Async": "true", "Timeout": "5000"}, self.timeout)
            event = await asyncio.wait_for(done, budget)
        except (TimeoutError, AmiError) as exc:
            self.add("FastAGI reachable", False, f"no answer from context ivr-doctor ({exc or 'timeout'}): "
                     "add `#tryinclude ivr-doctor.conf` to extensions.conf")
            return
        finally:
            unsubscribe()
            if own is not None:
                await own.close()
        agi = event.get("Agi", "?")
        who = "the doctor (no controller running)" if own else "the running controller"
        if event.get("AgiStatus") != "SUCCESS":
            self.add("FastAGI reachable", False, f"Asterisk could not reach {agi} (AGISTATUS="
                     f"{event.get('AgiStatus')}): start the controller, or fix IVR_AGI in ivr-globals.conf "
                     "to match [agi] host/port")
            return
        self.add("FastAGI reachable", True, f"Asterisk reached {agi}, answered by {who}")
        result = event.get("Result", "")
        if not result and own is not None and own.refused:
            self.add("FastAGI key", False, f"the session was refused ({', '.join(own.refused)}): the key in "
                     "the switch's ivr-agi-key.conf (IVR_AGI_KEY) must be the controller's [agi] key_file / "
                     "IVR_AGI_KEY, and every AGI() must pass ?ivr_key=${IVR_AGI_KEY}")
            return
        self.add("prompts in the sound path", result == "ok",
                 "every prompt of " + ", ".join(self.config.switch.languages) + " found" if result == "ok"
                 else (result or "the controller has no doctor route") +
                 ": run `ivr prompts build && ivr prompts install --dest <sounds>/"
                 f"{self.config.prompts.sound_prefix}`")

    async def _tone_zone(self, ami: AmiConnection) -> None:
        zone = await self._getvar(ami, "IVR_TONEZONE")
        want = self.config.switch.tone_zone
        self.add("tone zone", zone == want,
                 f"dialplan IVR_TONEZONE={zone or '(unset)'}, controller counts rings with {want!r}"
                 + ("" if zone == want else ": set the same zone in ivr-globals.conf and the config"))


async def run_doctor(config: Config, timeout: float = 10.0) -> list[Check]:
    return await _Doctor(config, timeout).run()


async def _start_own_agi(config: Config) -> FastAgiServer | None:
    """Listen on the controller's FastAGI port if no controller does (else None)."""
    server = FastAgiServer.from_config({"doctor": doctor_route(config)}, config.agi)
    try:
        await server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return server

