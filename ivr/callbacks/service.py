"""Call-backs the switch places itself (issue 18): the I/O around
:mod:`ivr.rules.callback`.

The queue lives in the call records (``ivr/records/callbacks.py``); the app hands this
service a function returning it (None while the database is away: nothing is placed
then). A loop looks at the queue every ``poll`` seconds, and at once when a request
arrives or an attempt ends; the machine picks the call-back first in line that is due
and has a free agent (no channel of the agent's device on the switch). Then, agent first:

* the agent's device is originated (``ChannelId`` chosen here) into
  ``[ivr-callback-agent]``: an ordinary ringing leg that the ring monitor alarms on;
* on answer, the FastAGI route ``callback-agent`` (:mod:`ivr.callbacks.agent`) tells the
  agent who is called back (number, time of the original call, the agent who held them)
  and waits for 1 (accept) or 2 (decline); a session cut without a verdict (the
  controller died) is asked again by the dialplan and served by the node leading then;
* accepted: the dialplan dials ``Local/<number>@ivr-callback-number``; on answer, before
  the bridge, the route ``callback-customer`` plays the greeting with the agent's number
  and hears the customer (:mod:`ivr.callbacks.live`): a key, or a short greeting then a
  pause, is a live person (connected); long speech is a machine (``machine``); neither
  within ``live_timeout`` after our greeting is ``no-live-answer``;
* the dial's outcome comes back as ``UserEvent: IvrCallbackDial`` (no answer, busy).

Every stage goes out as ``UserEvent: IvrCallback`` (``Stage``, ``CallbackId``,
``Attempt``, ``Agent``, ``Number``) and as a ``callback.stage`` event on the bus (kept in
the original call's event log). A restart loses nothing: the store is durable and an
attempt a previous controller left ``dialling`` is adopted if its agent leg is still on the
switch, else reopened (not the customer's fault): :mod:`ivr.callbacks.recovery`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from ivr.agi.channel import AgiChannel, AgiError, AgiHangup
from ivr.agi.wake import WAKE_DIGIT, wake_until
from ivr.ami.channels import ChannelTracker
from ivr.ami.confirm import channel_facts, hang_up_confirmed
from ivr.ami.connection import AmiError
from ivr.ami.link import AmiLink
from ivr.ami.queues import queue_members
from ivr.callbacks.agent import AgentSession
from ivr.callbacks.live import LiveListener, LiveWatch
from ivr.callbacks.metrics import CallbackMetrics
from ivr.callbacks.model import (
    DIAL_OUTCOMES,
    NUMBER,
    Attempt,
    CallbackQueueStore,
    CallbackSettings,
    Row,
    to_callback,
)
from ivr.callbacks.operations import CallbackOperations
from ivr.callbacks.recovery import resolve_in_flight
from ivr.catalog import digits_prompts
from ivr.events import EventBus
from ivr.rules.callback import (
    HUMAN,
    MACHINE,
    Callback,
    after_attempt,
    expired,
    pick,
)
from ivr.rules.dialing import device_key
from ivr.tasks import TaskSet

log = structlog.get_logger("ivr.callbacks")

class CallbackService(AgentSession, CallbackOperations):
    CUSTOMER_ROUTE = "callback-customer"

    def __init__(self, ami: AmiLink, channels: ChannelTracker, settings: CallbackSettings, *,
                 store: Callable[[], CallbackQueueStore | None], bus: EventBus | None = None,
                 metrics: CallbackMetrics | None = None, wall: Callable[[], float] = time.time,
                 acting: Callable[[], bool] = lambda: True, node: str = "") -> None:
        self.ami, self.channels, self.settings = ami, channels, settings
        self.acting = acting  # a controller pair: only the lease holder places call-backs
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self.store = store
        self.bus = bus or EventBus()
        self.metrics = metrics or CallbackMetrics()
        self.wall = wall
        self.tz = ZoneInfo(settings.tz)
        self.attempts: dict[str, Attempt] = {}  # by agent leg ChannelId
        self.wake = asyncio.Event()
        self._ids = itertools.count(1)
        self._prefix = f"ivrcb{uuid.uuid4().hex[:10]}"  # ChannelIds unique across restarts and nodes
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet("callbacks.task_failed")
        self.adopting = asyncio.Lock()  # one adoption at a time (ivr.callbacks.recovery)
        self.announcing = {}  # agent sessions in the announcement (ivr.callbacks.agent)
        self.ticks = 0  # looks at the queue so far (a test waits for some to pass)
        self.live = LiveListener(settings.live, settings.live_threshold)

    @property
    def agi_routes(self) -> dict[str, Any]:
        return {self.AGENT_ROUTE: self.agent_agi, self.CUSTOMER_ROUTE: self.customer_agi}

    def attach(self) -> None:
        for name in ("Hangup", "UserEvent"):
            self.ami.subscribe(name, self.handle_event)
        self.live.attach(self.ami)

    async def start(self) -> None:
        if self.settings.enabled and self._loop_task is None:
            self._loop_task = asyncio.ensure_future(self._loop())

    async def stopping_now(self) -> None:
        """The app stops serving (before the FastAGI server's grace): hand the agents'
        announcements back to the dialplan (:meth:`~ivr.callbacks.agent.AgentSession.hand_back`)."""
        self.hand_back()

    async def close(self) -> None:
        await self._tasks.close(self._loop_task)
        self._loop_task = None

    def poke(self) -> None:
        self.wake.set()

    # -- the queue ---------------------------------------------------------------------
    def local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, self.tz)

    def free_agents(self) -> list[str]:
        """Configured agents with no channel of their device on the switch and no attempt."""
        busy_devices = {ch.device for ch in self.channels.channels.values()}
        placing = {a.agent for a in self.attempts.values()}
        return [n for n, dev in self.settings.agents.items() if dev not in busy_devices and n not in placing]

    async def queue_agents(self, queues: set[str]) -> dict[str, list[str]]:
        """The configured agents the switch has in each queue now (QueueStatus; paused
        members left out). A queue the switch cannot tell of is left out: nobody of it is
        rung this time."""
        by_device = {device_key(dial): number for number, dial in self.settings.agents.items()}
        out: dict[str, list[str]] = {}
        for name in sorted(queues):
            try:
                members = await queue_members(self.ami, name)
            except (AmiError, ValueError) as exc:
                log.warning("callbacks.queue_unknown", queue=name, error=str(exc))
                continue
            out[name] = [by_device[device_key(m.interface)] for m in members or ()
                         if not m.paused and device_key(m.interface) in by_device]
        return out

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.poll)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a database or AMI failure: the next tick tries again
                log.warning("callbacks.tick_failed", error=str(exc))

    async def tick(self) -> list[Attempt]:
        """Place what is due now; returns the attempts started."""
        store = self.store()
        if store is None or not self.ami.connected or not self.acting() or self.stopping:
            return []  # a controller stopping places and adopts nothing more
        now = self.wall()
        await resolve_in_flight(self, store, now)  # attempts under way that this controller is not running
        rows = await store.open()
        local = self.local(now)
        waiting = []
        for row in rows:
            cb = to_callback(row)
            cb = replace(cb, held_by=self.settings.agent_number(cb.held_by))
            if expired(cb, local):
                await store.expire(cb.id, now)
                log.info("callbacks.expired", callback_id=cb.id)
                continue
            if cb.status == "open" and not NUMBER.match(cb.phone):  # caller data: never dialled
                await store.cancel(cb.id, now, reason="invalid-number")
                log.warning("callbacks.invalid_number", callback_id=cb.id)
                continue
            waiting.append((cb, row))
        self.metrics.pending.set(len(waiting))
        started: list[Attempt] = []
        free = self.free_agents()
        candidates = [cb for cb, _ in waiting]
        members = await self.queue_agents({cb.target.removeprefix("queue:") for cb in candidates
                                           if cb.target.startswith("queue:")})
        while (chosen := pick(candidates, now, local, free, self.settings.policy, members)) is not None:
            cb = chosen.callback
            candidates = [c for c in candidates if c.id != cb.id]
            free = [a for a in free if a != chosen.agent]
            row = next(r for c, r in waiting if c.id == cb.id)
            attempt = await self._begin(store, cb, str(row.get("call_id") or ""), chosen.agent, now)
            if attempt is not None:
                started.append(attempt)
        self.ticks += 1
        return started

    async def _begin(self, store: CallbackQueueStore, cb: Callback, call_id: str, agent: str,
                     now: float) -> Attempt | None:
        if not NUMBER.match(cb.phone):  # checked again where it is dialled
            return None
        uid = f"{self._prefix}-{next(self._ids)}"
        attempt_id = await store.start_attempt(cb.id, agent, now, channel=uid, node=self.node)
        if attempt_id is None:
            return None
        att = Attempt(uid=uid, attempt_id=attempt_id, callback=cb,
                      call_id=call_id, agent=agent, device=self.settings.agents[agent], number=cb.phone,
                      done=asyncio.get_running_loop().create_future())
        self.attempts[att.uid] = att
        self._tasks.spawn(self._run(store, att))
        return att

    def adopt(self, store: CallbackQueueStore, row: Row) -> Attempt:
        """Follow an attempt another controller placed whose agent leg is still on the switch
        (:mod:`ivr.callbacks.recovery`): its events and FastAGI sessions are served here."""
        cb = to_callback(row)
        cb = replace(cb, held_by=self.settings.agent_number(cb.held_by))
        agent = str(row.get("attempt_agent") or "")
        att = Attempt(uid=str(row["channel"]), attempt_id=str(row["attempt_id"]), callback=cb,
                      call_id=str(row.get("call_id") or ""), agent=agent, device=self.settings.agents.get(agent, ""),
                      number=cb.phone, done=asyncio.get_running_loop().create_future(), adopted=True)
        self.attempts[att.uid] = att
        self._tasks.spawn(self._run(store, att))
        return att

    async def _follow(self, att: Attempt) -> str:
        """An adopted attempt's outcome: its events, or (a Hangup missed while nobody
        listened) its leg gone from the switch: not the customer's fault."""
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(att.done), self.settings.poll)
            except TimeoutError:
                try:
                    if await channel_facts(self.ami, att.uid) is None:
                        att.resolve("agent-no-answer")
                except AmiError as exc:
                    log.debug("callbacks.follow_unconfirmed", callback_id=att.callback.id, error=str(exc))

    async def _run(self, store: CallbackQueueStore, att: Attempt) -> None:
        try:
            if att.adopted:
                await self._finish(store, att, await self._follow(att))
                return
            await self._stage(att, "agent-ringing")
            originate = {
                "Action": "Originate", "Channel": att.device, "Context": "ivr-callback-agent",
                "Exten": "s", "Priority": "1", "Async": "true",
                "Timeout": str(int(self.settings.agent_ring * 1000)), "ChannelId": att.uid,
                "CallerID": f'"{att.number}" <{att.number}>',
                "Variable": f"IVR_CB_ID={att.uid},{self.settings.agent_variables}",  # the re-ask bound, per call
            }
            if att.device.startswith("Local/"):
                originate["OtherChannelId"] = f"{att.uid}-2"
            try:
                await self.ami.action(originate, as_list=False)
            except AmiError as exc:
                log.warning("callbacks.originate_failed", callback_id=att.callback.id, error=str(exc))
                att.resolve("agent-no-answer")
            try:
                outcome = await asyncio.wait_for(asyncio.shield(att.done), self.settings.attempt_limit)
            except TimeoutError:
                outcome = "agent-no-answer" if not att.accepted else "no-answer"
                await self._hangup(att.uid)
            await self._finish(store, att, outcome)
        finally:
            self.attempts.pop(att.uid, None)
            self.poke()

    async def _finish(self, store: CallbackQueueStore, att: Attempt, outcome: str) -> None:
        now = self.wall()
        after = after_attempt(att.callback, outcome, now, self.settings.policy)
        await store.finish_attempt(att.callback.id, att.attempt_id, outcome=outcome, status=after.status,
                                   attempts=after.attempts, next_attempt=after.next_attempt,
                                   burned=after.burned, at=now)
        self.metrics.attempts.labels(outcome=outcome).inc()
        log.info("callbacks.attempt", callback_id=att.callback.id, agent=att.agent, outcome=outcome,
                 status=after.status, attempts=after.attempts, next_attempt=after.next_attempt)
        await self._stage(att, outcome, status=after.status, next_attempt=after.next_attempt)

    async def _stage(self, att: Attempt, stage: str, **extra: Any) -> None:
        att.stages.append(stage)
        self.bus.emit("callback.stage", att.call_id or att.callback.id, callback_id=att.callback.id,
                      stage=stage, agent=att.agent, number=att.number, attempt=att.callback.attempts + 1, **extra)
        fields = {"Action": "UserEvent", "UserEvent": "IvrCallback", "Stage": stage,
                  "CallbackId": att.callback.id, "Attempt": str(att.callback.attempts + 1),
                  "Agent": att.agent, "Number": att.number, "Uniqueid": att.uid}
        if "status" in extra:
            fields["Status"] = str(extra["status"])
        if extra.get("live"):
            fields["Live"] = str(extra["live"])  # how the customer answered live: key or speech
        try:
            await self.ami.action(fields, 5.0)
        except AmiError as exc:
            log.warning("callbacks.userevent_failed", callback_id=att.callback.id, error=str(exc))

    async def _hangup(self, uid: str) -> None:
        """Hang up our leg (its ChannelId is ``uid``) once the switch confirms it is ours."""
        await hang_up_confirmed(self.ami, uid, uniqueid=uid, why="callback")

    # -- AMI events --------------------------------------------------------------------
    def handle_event(self, event: Any) -> None:
        kind = event.get("Event", "")
        if kind == "UserEvent":
            att = self.attempts.get(event.get("CallbackId", ""))
            if att is None or att.done.done():
                return
            if event.get("UserEvent") == "IvrCallbackUnchecked":
                # No controller gave the customer route its verdict (it failed, or a node that
                # does not run this attempt answered): the dialplan connected the customer, who
                # answered, to the agent who accepted. Done: never called again.
                att.resolve("connected")
                self._tasks.spawn(self._stage(att, "connected", live="unchecked"))
            elif event.get("UserEvent") == "IvrCallbackDial":
                status = event.get("DialStatus", "")
                # ANSWER: the customer was bridged (a "no" verdict hangs both legs up, and no
                # event comes); a verdict given here was the outcome already.
                att.resolve(DIAL_OUTCOMES.get(status, "connected" if status == "ANSWER" else "no-answer"))
            return
        if kind == "Hangup":
            att = self.attempts.get(event.get("Uniqueid", ""))
            if att is not None:
                att.resolve("agent-declined" if att.agi else "agent-no-answer")

    # -- the customer's FastAGI session (before the bridge) ---------------------------------
    def greeting(self, att: Attempt) -> list[str]:
        """What the customer hears before the key is asked for: the greeting, the agent's number."""
        return ["callback_greeting", "agent_intro", *digits_prompts(att.agent), "agent_service"]

    async def customer_agi(self, call: AgiChannel) -> None:
        """FastAGI route ``callback-customer``: the greeting with the agent's number, then
        a live answer: a key, or speech the way a person answers (:mod:`ivr.callbacks.live`)."""
        att = self.attempts.get(call.headers.get("agi_arg_1", ""))
        if att is None or not att.accepted:
            # Only [ivr-callback-agent]'s Dial, after an agent accepted, runs this route: an
            # attempt this node does not know was placed by a node that died (or before a
            # restart). IVR_CB_LIVE stays empty: the dialplan connects the customer, who
            # answered, to the agent who accepted, rather than hang up on them.
            log.warning("callbacks.unknown_customer_leg", uniqueid=call.uniqueid)
            return
        await self._stage(att, "customer-answered")
        try:
            async with self.live.listen(call) as watch:
                outcome, how = await self._hear(call, att, watch)
                log.info("callbacks.customer_heard", callback_id=att.callback.id, outcome=outcome, by=how,
                         bursts=watch.answer.bursts)
            # The verdict, either way: only an empty one (the controller failed) is connected
            # unheard by the dialplan.
            await call.set_variable("IVR_CB_LIVE", "yes" if outcome == "connected" else "no")
        except AgiHangup:
            outcome, how = "no-live-answer", ""
        except AgiError as exc:  # no verdict: the dialplan connects them (IvrCallbackUnchecked)
            log.error("callbacks.customer_route_failed", callback_id=att.callback.id, error=str(exc))
            return
        att.resolve(outcome)
        if outcome == "connected":
            await self._stage(att, "connected", live=how)

    async def _hear(self, call: AgiChannel, att: Attempt, watch: LiveWatch) -> tuple[str, str]:
        """The greeting and the agent's number heard whole (unless a machine talks over
        them), then "say hello or press any key" and the wait: a key or a person's greeting
        is ``connected``, long speech ``machine``, nothing ``no-live-answer``; and by what
        (``key``, ``speech`` or "")."""
        for prompt in self.greeting(att):
            if watch.verdict() == MACHINE:
                return "machine", "speech"
            await call.stream_file(f"{self.settings.sounds}/{prompt}")
        keys = "0123456789*#"
        digit = None
        if watch.verdict() is None:
            digit = await self._until_heard(call, watch, call.stream_file(
                f"{self.settings.sounds}/callback_press", keys + WAKE_DIGIT))
            if not digit and watch.verdict() is None:
                digit = await self._until_heard(call, watch, call.wait_for_digit(
                    int(self.settings.live_timeout * 1000)))
        if digit:
            return "connected", "key"
        verdict = watch.verdict()
        outcome = {HUMAN: "connected", MACHINE: "machine"}.get(verdict or "", "no-live-answer")
        return outcome, "speech" if verdict else ""

    async def _until_heard(self, call: AgiChannel, watch: LiveWatch, command: Any) -> str | None:
        """Run the AGI ``command`` (a prompt or a wait for a key); a verdict on the speech
        meanwhile ends it with the wake digit. The customer's key, or None."""
        woken = asyncio.Event()

        async def waker() -> None:
            if await watch.wait() is not None:
                await wake_until(self.ami, call.channel, woken)

        task = asyncio.ensure_future(waker())
        try:
            digit: str | None = await command
        finally:
            woken.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return None if digit == WAKE_DIGIT else digit
