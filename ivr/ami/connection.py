"""The controller's AMI connection, on top of panoramisk.

panoramisk's ``Manager`` parses the AMI stream and matches replies to actions; what it
does on a broken connection is wrong for a call controller, so this module takes that
part over (see ASTERISK.md, "panoramisk traps"):

* **Reconnect** with capped exponential backoff, and log in again, here; the Manager's
  own fixed-delay reconnect is switched off.
* **Half-open sockets**: the Manager pings but never looks at the reply. Here a ``Ping``
  is sent every ``ping_interval`` s; no Pong *and not one byte from the switch* within
  ``ping_timeout`` s means the socket is dead: it is closed and the connection is made
  again. While bytes keep arriving (a busy switch) the Pong may take up to
  ``ping_busy_timeout`` s (see ivr/ami/keepalive.py).
* **No action runs twice**: the Manager re-sends actions that had no reply once it is
  connected again, so an ``Originate`` or ``Redirect`` in flight could run twice. Here
  nothing is ever re-sent (every action is "forgetable" to panoramisk); an action in
  flight when the connection drops fails with :class:`AmiConnectionLost`, which says
  that the switch may or may not have run it.
* **One error type**: transport and protocol failures become :class:`AmiError`
  subclasses in this one place; callers never see ``OSError`` or panoramisk internals.

Frames are read by :class:`~ivr.ami.protocol.AmiProtocol` (panoramisk's protocol with a
leaner parser; its messages are ``panoramisk.message.Message`` subclasses).
Events are delivered in order, synchronously, to callbacks subscribed by event name
(or ``"*"``); a callback that returns an awaitable has it run as a tracked task. After
every (re)login the ``on_connected`` callbacks run (awaited in order) so that state
built from events can be resynced (events during an outage are lost).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from panoramisk import Manager
from panoramisk.message import Message

from ivr.ami.errors import (
    READ_ACTIONS,
    AmiActionError,
    AmiConnectionLost,
    AmiError,
    AmiLoginError,
    AmiNotConnected,
    AmiNotLeader,
    AmiTimeout,
    AmiUnsafeValue,
    check_action,
)
from ivr.ami.keepalive import Backoff, ping_once
from ivr.ami.manager import LeanManager
from ivr.ami.protocol import AmiProtocol
from ivr.sections import AmiConfig

# The errors and check_action live in ivr/ami/errors.py; importing them from here still works.
__all__ = ["READ_ACTIONS", "AmiActionError", "AmiConnection", "AmiConnectionLost", "AmiError", "AmiLoginError",
           "AmiNotConnected", "AmiNotLeader", "AmiTimeout", "AmiUnsafeValue", "Backoff", "ConnectedCallback",
           "EventCallback", "check_action"]

log = structlog.get_logger("ivr.ami")

EventCallback = Callable[[Message], Any]
ConnectedCallback = Callable[[], Awaitable[None] | None]


class AmiConnection:
    """One logged-in AMI connection that keeps itself alive.

    ``await conn.start()`` begins connecting (it does not wait: use ``wait_connected``);
    ``await conn.close()`` stops for good.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        ping_interval: float = AmiConfig.ping_interval,
        ping_timeout: float = AmiConfig.ping_timeout,
        ping_busy_timeout: float = AmiConfig.ping_busy_timeout,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        events: str = "on",
    ) -> None:
        self.host, self.port = host, port
        self.username, self._secret = username, secret
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.ping_busy_timeout = max(ping_busy_timeout, ping_timeout)
        self.pings_late = 0  # Pongs that came after ping_timeout while the switch kept sending
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.events = events
        self._subs: dict[str, list[EventCallback]] = defaultdict(list)
        self._routes: dict[str, tuple[EventCallback, ...]] = {}  # event name as sent -> callbacks
        self._on_connected: list[ConnectedCallback] = []
        self._manager: LeanManager | None = None
        self._lost = asyncio.Event()
        self._up = asyncio.Event()
        self._ready = asyncio.Event()  # connected and every on_connected callback has run
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._closing = False
        # The one gate of a controller pair: called with every action that is not in
        # READ_ACTIONS just before it is written; False: refused with AmiNotLeader.
        self.guard: Callable[[dict[str, Any]], bool] | None = None
        self.connects = 0  # successful logins so far (1 = first, 2+ = reconnects)
        self.last_error = ""

    @classmethod
    def from_config(cls, ami: AmiConfig, **overrides: Any) -> AmiConnection:
        """Build from the ``[ami]`` section; its None settings (connect_timeout, backoff_initial,
        backoff_max) leave the connection's and :class:`Backoff`'s own defaults."""
        kwargs: dict[str, Any] = {"ping_interval": float(ami.ping_interval), "ping_timeout": float(ami.ping_timeout),
                                  "ping_busy_timeout": float(ami.ping_busy_timeout)}
        if ami.connect_timeout is not None:
            kwargs["connect_timeout"] = float(ami.connect_timeout)
        if ami.backoff_initial is not None or ami.backoff_max is not None:
            default = Backoff()
            kwargs["backoff"] = Backoff(initial=float(ami.backoff_initial or default.initial),
                                        maximum=float(ami.backoff_max or default.maximum))
        kwargs.update(overrides)
        return cls(ami.host, int(ami.port), ami.username, ami.secret, **kwargs)

    # -- state ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            raise AmiNotConnected(
                f"AMI {self.host}:{self.port} not connected within {timeout} s: {self.last_error or 'no reply'}",
                host=self.host, port=self.port,
            ) from None

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until connected *and* the on_connected callbacks (resync, globals) ran."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise AmiNotConnected(
                f"AMI {self.host}:{self.port} not ready within {timeout} s: {self.last_error or 'no reply'}",
                host=self.host, port=self.port,
            ) from None

    # -- subscriptions ----------------------------------------------------------------
    def subscribe(self, event: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(message)`` for every event named ``event`` (any case) or, with
        ``"*"``, for every event. Returns a function that unsubscribes."""
        key = event.lower()
        self._subs[key].append(callback)
        self._routes.clear()

        def unsubscribe() -> None:
            if callback in self._subs.get(key, []):
                self._subs[key].remove(callback)
                self._routes.clear()

        return unsubscribe

    def on_connected(self, callback: ConnectedCallback) -> None:
        """Run ``callback()`` after every successful login (first connect and reconnects)."""
        self._on_connected.append(callback)

    def _dispatch(self, _manager: Manager, event: Message) -> None:
        name = event.get("Event", "")
        callbacks = self._routes.get(name) if isinstance(name, str) else None
        if callbacks is None:  # first event of this name since the subscriptions changed
            key = str(name).lower()
            callbacks = (*self._subs.get(key, ()), *self._subs.get("*", ()))
            if isinstance(name, str) and len(self._routes) < 1000:
                self._routes[name] = callbacks
        for cb in callbacks:
            try:
                result = cb(event)
            except Exception:
                log.exception("ami.subscriber_failed", ami_event=event.get("Event"))
                continue
            if result is not None and inspect.isawaitable(result):
                self._track(result)

    def _track(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ami.callback_failed", exc_info=task.exception())

    # -- actions ----------------------------------------------------------------------
    async def action(self, action: dict[str, Any], timeout: float = 10.0, *,
                     as_list: bool | None = None) -> Any:
        """Send one action and return its reply (a ``Message``, or a list for event lists).

        Never re-sent: if the connection drops before the reply, :class:`AmiConnectionLost`
        is raised and the action may or may not have run. Raises :class:`AmiNotConnected`
        if there is no connection within ``timeout``, :class:`AmiTimeout` if no reply
        comes, :class:`AmiActionError` on ``Response: Error``, :class:`AmiNotLeader` when
        ``guard`` refuses an action that changes the switch (it is asked at the moment
        of sending, after any wait for the connection).
        """
        name = str(action.get("Action", "?"))
        check_action(action)  # before anything else: an unsafe action is never sent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.wait_connected(timeout)
        manager = self._manager
        if manager is None or manager.protocol is None or manager.protocol.closed:
            raise AmiNotConnected(f"AMI {name}: not connected", action=name)
        if self.guard is not None and name.lower() not in READ_ACTIONS and not self.guard(action):
            raise AmiNotLeader(f"AMI {name}: not sent, this controller is not the leader", action=name)
        try:
            future = manager.send_action(dict(action), as_list=as_list)
        except Exception as exc:  # transport already gone
            raise AmiConnectionLost(f"AMI {name}: connection lost before sending ({exc})", action=name) from exc
        self._inflight.add(future)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives together with the reply (close() then hung until the next ping).
            async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                reply = await asyncio.shield(future)
        except TimeoutError:
            raise AmiTimeout(f"AMI {name}: no reply within {timeout} s", action=name) from None
        finally:
            self._inflight.discard(future)
        first = reply[0] if isinstance(reply, list) else reply
        if first is not None and first.get("Response") in ("Error", "Fail", "Failure"):
            raise AmiActionError(f"AMI {name} failed: {first.get('Message', 'error')}",
                                 action=name, reply=dict(first))
        return reply

    async def _run_connected(self) -> None:
        for callback in list(self._on_connected):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except AmiError as exc:
                (log.debug if isinstance(exc, AmiNotLeader) else log.warning)("ami.on_connected_failed", error=str(exc))
            except Exception:
                log.exception("ami.on_connected_failed")

    async def resync(self) -> None:
        """Run the ``on_connected`` callbacks again now, as after a login (a controller
        pair's new leader: its view is rebuilt and what a standby withheld, such as the
        dialplan globals, is published). Nothing when not connected: the next login will."""
        if self._ready.is_set():
            await self._run_connected()

    async def ping(self, timeout: float | None = None) -> None:
        await self.action({"Action": "Ping"}, timeout or self.ping_timeout)

    def _fail_inflight(self, reason: str) -> None:
        for future in list(self._inflight):
            if not future.done():
                future.set_exception(AmiConnectionLost(
                    f"AMI connection lost ({reason}) before the reply; the action was not sent again "
                    "and may or may not have run", reason=reason))
        self._inflight.clear()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ivr-ami")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._teardown("closed")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_lost(self, exc: object) -> None:
        self.last_error = f"connection lost ({exc})" if exc else "connection lost"
        self._lost.set()

    def _teardown(self, reason: str) -> None:
        was_up = self._up.is_set()
        self._up.clear()
        self._ready.clear()
        manager, self._manager = self._manager, None
        if manager is not None and manager.protocol is not None and not manager.protocol.closed:
            manager.protocol.closed = True  # a later connection_lost must not call back
            manager.protocol.transport.close()
        self._fail_inflight(reason)
        if was_up:
            log.warning("ami.disconnected", host=self.host, port=self.port, reason=reason)

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._lost.clear()
        manager = LeanManager(self._on_lost, host=self.host, port=self.port, loop=loop)
        manager.register_event("*", self._dispatch)
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(manager.config["protocol_factory"], self.host, self.port),
                self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise AmiNotConnected(f"AMI {self.host}:{self.port}: {exc or 'connect timed out'}") from exc
        login = {"Action": "Login", "Username": self.username, "Secret": self._secret,
                 "Events": self.events}
        check_action(login)  # a secret with a line break would be a second action
        manager.attach(protocol)
        self._manager = manager
        future = manager.send_action(login)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({future, lost}, timeout=self.connect_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if future not in done:
            raise AmiNotConnected(f"AMI {self.host}:{self.port}: no reply to Login")
        reply = future.result()
        if not reply.success:
            raise AmiLoginError(f"AMI login as {self.username!r} refused: {reply.get('Message', '')}",
                                username=self.username)

    async def _watch(self) -> str:
        """Ping until the connection is lost or a pong is missing; return why it ended."""
        while True:
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                done, _ = await asyncio.wait({lost}, timeout=self.ping_interval)
            finally:
                lost.cancel()
            if done:
                return self.last_error or "connection lost"
            reason = await self._keep_alive()
            if reason:
                return reason

    async def _keep_alive(self) -> str:
        """One Ping: "" when its Pong came, else why the connection is taken for dead."""
        def received() -> int:
            protocol = self._manager.protocol if self._manager else None  # panoramisk's attribute (untyped)
            return protocol.received if isinstance(protocol, AmiProtocol) else 0

        reason, late = await ping_once(lambda: self.action({"Action": "Ping"}, self.ping_busy_timeout),
                                       self._lost, received, self.ping_timeout, self.ping_busy_timeout)
        if not reason and late > self.ping_timeout:
            self.pings_late += 1
            log.warning("ami.ping_late", seconds=round(late, 2), pings_late=self.pings_late)
        return (self.last_error or reason) if reason and self._lost.is_set() else reason

    async def _run(self) -> None:
        delays = self.backoff.delays()
        while not self._closing:
            try:
                await self._connect_once()
            except AmiError as exc:
                self.last_error = str(exc)
                self._teardown(str(exc))
                level = log.error if isinstance(exc, (AmiLoginError, AmiUnsafeValue)) else log.info
                delay = next(delays)
                level("ami.connect_failed", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self.connects += 1
            self.last_error = ""
            self._up.set()
            log.info("ami.connected", host=self.host, port=self.port, connects=self.connects)
            await self._run_connected()
            self._ready.set()
            reason = await self._watch()
            self._teardown(reason)
            delays = self.backoff.delays()
            delay = next(delays)
            log.info("ami.reconnecting", reason=reason, retry_in=round(delay, 2))
            await asyncio.sleep(delay)
