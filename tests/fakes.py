"""The test doubles every unit test shares: one clock; the in-memory AMI server of
:mod:`ivr.ami.testing` (a real :class:`~ivr.ami.connection.AmiConnection` talks to it,
for tests of the connection and of what crosses the wire); :class:`RecordingAmi`, an
in-process stand-in for the connection where a service's decisions are what is tested; and
:class:`FakeAgi`, one call's FastAGI session (:class:`~ivr.agi.channel.AgiChannel`) with a
scripted caller.

And the waits every unit test shares (issue 15: every wait bounded, no sleep-and-hope):
:func:`until` polls state that raises no event, :func:`drain` waits for the background tasks
a service (or :class:`RecordingAmi`) started, :func:`idle` runs the event loop until nothing
is ready, so that a negative assertion after it ("no Hangup sent") is exact, and
:class:`BusLog` reads what the event bus published without a collector task to wait for."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ivr.agi.channel import (
    AgiChannel,
    AgiHangup,
    AgiReply,
    _quote,  # quoted as the real channel quotes
)
from ivr.ami.connection import AmiActionError
from ivr.ami.link import AmiLink
from ivr.ami.protocol import AmiProtocol
from ivr.ami.testing import FakeAmi as AmiServer
from ivr.ami.testing import LiveChannels
from ivr.events import CallEvent, EventBus

__all__ = ["HANGUP", "AmiServer", "AsideAmi", "BusLog", "Clock", "FakeAgi", "RecordingAmi", "ami_reader",
           "drain", "idle", "until"]

Reply = Callable[[dict[str, Any]], Any]


async def until(predicate: Callable[..., Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll state that raises no event of its own (a service's sessions, a counter, a log
    line, a file), bounded: returns ``predicate()``'s first truthy value, or fails naming
    ``what`` (by default the predicate's source line) after ``timeout`` s. ``predicate``
    may be async. Checked at once, then every
    1 ms, backing off to every 20 ms (quick when the answer is a loop turn away, cheap when
    it is a database away)."""
    loop = asyncio.get_running_loop()
    deadline, every = loop.time() + timeout, 0.001
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"{what or _source(predicate)}: not within {timeout} s")
        await asyncio.sleep(every)
        every = min(every * 2, 0.02)


def _source(function: Any) -> str:
    try:
        return inspect.getsource(function).strip()
    except (OSError, TypeError):
        return repr(function)


def _tasks_of(owner: Any) -> list[asyncio.Future[Any]]:
    tasks = getattr(owner, "_tasks", owner)  # a service's set or TaskSet; or the tasks themselves
    return [t for t in list(tasks) if not t.done()]


async def drain(*owners: Any, timeout: float = 5.0) -> None:
    """Wait until every background task of ``owners`` has ended, the tasks they start
    meanwhile included: a service that keeps its tasks in ``_tasks`` (a set or a
    :class:`~ivr.tasks.TaskSet`), a :class:`RecordingAmi` (its async subscribers' tasks), or
    an iterable of tasks. A negative assertion after it ("no Hangup sent") is exact: what
    the service was going to do, it has done. Fails after ``timeout`` s naming what runs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        running = [t for owner in owners for t in _tasks_of(owner)]
        if not running:
            # What the last task scheduled with call_soon (an event it made happen) runs in
            # this one turn; if that started nothing, everything is done.
            await asyncio.sleep(0)
            if not any(_tasks_of(owner) for owner in owners):
                return
            continue
        _, pending = await asyncio.wait(running, timeout=max(deadline - loop.time(), 0.0))
        if pending:
            raise AssertionError(f"still running after {timeout} s: {sorted(map(repr, pending))}")


async def idle(turns: int = 1000) -> None:
    """Run the event loop until nothing is ready to run: every task has gone as far as it
    can without time passing or I/O. In the unit tests' in-memory world (the actions of
    :class:`RecordingAmi`, the bus, a :class:`Clock`'s timers) that is everything the code
    will do, so a negative assertion after it is exact. For work a test has no handle on
    (use :func:`drain` when the service keeps its tasks); not for threads, sockets or real
    timers. Fails if work is still ready after ``turns`` loop turns (something spins)."""
    loop = asyncio.get_running_loop()
    for _ in range(turns):
        await asyncio.sleep(0)  # one turn: every callback ready before it runs
        if not loop._ready:  # type: ignore[attr-defined]  # CPython's ready queue: nothing left but us
            return
    raise AssertionError(f"the event loop was still busy after {turns} turns")


class BusLog(Sequence[CallEvent]):
    """Every event published on ``bus`` since this was made, in order. Subscribed at once
    and read synchronously (no collector task that must run first): what a test reads is
    exactly what was published before it reads. Unbounded: nothing is dropped between reads."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._queue = bus.open_queue(queue=asyncio.Queue())
        self._seen: list[CallEvent] = []

    def _read(self) -> list[CallEvent]:
        while not self._queue.empty():
            self._seen.append(self._queue.get_nowait())
        return self._seen

    def __getitem__(self, index: Any) -> Any:
        return self._read()[index]

    def __len__(self) -> int:
        return len(self._read())

    def kinds(self) -> list[str]:
        return [e.kind for e in self._read()]

    def close(self) -> None:
        self.bus.close_queue(self._queue)


class Clock:
    """A clock that moves only when told: ``clock()`` is the time, ``clock.t`` sets it.
    Inject it into the timer service and the rules; fire deadlines by advancing it."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class RecordingAmi:
    """What services use of :class:`~ivr.ami.connection.AmiConnection` (an
    :class:`~ivr.ami.link.AmiLink`), in process:
    ``subscribe`` (event names case-insensitive), ``on_connected``, ``action`` (recorded;
    answered by ``replies[name](action)`` or ``{"Response": "Success"}``; an action named in
    ``fail`` raises :class:`AmiActionError`), and ``event(...)`` to deliver an event to the
    subscribers at once (an async subscriber's run is a task, kept until done: :func:`drain`).
    ``live`` (:class:`~ivr.ami.testing.LiveChannels`) is the switch's own view that ``Status``
    answers from: learnt from every event except a ``forged`` one, so a test can prove the
    controller asks the switch before destroying anything."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.subs: dict[str, list[Callable[[dict[str, str]], Any]]] = {}
        self.replies: dict[str, Reply] = {}
        self.fail: set[str] = set()
        self.connected = True
        self.connects = 1
        self.live = LiveChannels()
        self._tasks: set[asyncio.Future[Any]] = set()  # async subscribers' runs (see drain)

    def subscribe(self, event: str, callback: Callable[[dict[str, str]], Any]) -> Callable[[], None]:
        self.subs.setdefault(event.lower(), []).append(callback)
        return lambda: None

    def on_connected(self, callback: Any) -> None:
        pass

    def event(self, fields: dict[str, str] | None = None, forged: bool = False, **more: str) -> None:
        fields = {**(fields or {}), **more}
        if not forged:
            self.live.learn(fields)
        for cb in self.subs.get(fields["Event"].lower(), []):
            result = cb(fields)
            if inspect.isawaitable(result):  # run and kept until done, as AmiConnection does
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def fire(self, event: str, **fields: str) -> None:
        self.event({"Event": event, **fields})

    async def action(self, action: dict[str, Any], timeout: float = 10.0, *, as_list: bool | None = None,
                     **_: Any) -> Any:
        self.actions.append(action)
        name = action["Action"]
        if name in self.fail:
            raise AmiActionError(f"AMI {name} failed: No such channel")
        live = self.live.act(action)
        reply = self.replies.get(name)
        if reply is not None:
            return reply(action)
        if isinstance(live, dict) and live.get("Response") == "Error":
            raise AmiActionError(f"AMI {name} failed: {live['Message']}")
        return live or {"Response": "Success"}

    def sent(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["Action"] == name]

    named = sent

    def states(self) -> list[str]:
        return [a["State"] for a in self.sent("UserEvent")]


class ManagerStub:
    """What an AMI protocol reader talks to (panoramisk's Manager): events and losses kept."""

    def __init__(self) -> None:
        self.events: list[Message] = []
        self.lost: list[object] = []
        self.forgetable_actions = ()
        self.awaiting_actions: list[Any] = []

    def dispatch(self, event: Message) -> None:
        self.events.append(event)

    def connection_lost(self, exc: object) -> None:
        self.lost.append(exc)


class WireStub:
    """The transport under an AMI protocol reader: what it writes, kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def ami_reader(cls: type[AMIProtocol] = AmiProtocol) -> AMIProtocol:
    """A protocol reader (ours, or panoramisk's ``AMIProtocol`` to compare) fed by hand:
    ``data_received(bytes)``, then ``factory.events``."""
    proto = cls()
    proto.connection_made(WireStub())
    proto.factory = ManagerStub()
    return proto


HANGUP = "hangup"  # queued in place of a key (FakeAgi.press): the caller hangs up there
OK = AgiReply(200, "0", "", "200 result=0")


class FakeAgi:
    """One call's FastAGI session as Asterisk runs it, in memory: an
    :class:`~ivr.agi.channel.AgiChannel` that a route takes like the real one.

    What the controller sent: ``commands`` (each as :class:`~ivr.agi.channel.FastAgiChannel`
    writes it, e.g. ``STREAM FILE ivr/en-US/hold_choices "123D"``; :meth:`sent` filters them,
    :meth:`played` names the prompts), ``log`` (``(time, "play <prompt>")``, ``"end play
    <prompt>"``, ``"wait"``, ``"end wait"``) and ``variables`` (SET VARIABLE, also what GET
    VARIABLE answers).

    The caller: :meth:`press` queues a key (:data:`HANGUP` a hang-up; every command after
    it raises :class:`AgiHangup`); ``on_play[prompt]`` runs once when that prompt starts
    (to press a key in it); ``hooks`` run at every play and wait. A STREAM FILE returns a
    key only if it is one of its escape digits (Asterisk's rule; the key is used up either
    way); WAIT FOR DIGIT returns any key.

    Time: a play lasts ``prompt_s``, a wait its own timeout (at most ``wait_cap`` s when
    given); a key queued meanwhile ends it at once. With a ``clock`` the time is fake: the
    event loop runs until idle (:func:`idle`: a key the controller sends, such as the wake
    digit by PlayDTMF, arrives), then the clock jumps and ``settle`` (e.g.
    :meth:`~ivr.timers.TimerService.settle`) lets the deadlines passed fire. Without one it
    passes for real (keep ``prompt_s`` and ``wait_cap`` small)."""

    def __init__(self, uniqueid: str = "1700000000.1", *, caller: str = "13800000001",
                 channel: str = "Local/c@x-00000001;1", args: tuple[str, ...] = (), clock: Clock | None = None,
                 prompt_s: float = 0.01, wait_cap: float | None = None,
                 settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.headers = {"agi_uniqueid": uniqueid, "agi_callerid": caller, "agi_channel": channel,
                        **{f"agi_arg_{i}": arg for i, arg in enumerate(args, 1)}}
        self.hung_up = False
        self.clock, self.prompt_s, self.wait_cap, self.settle = clock, prompt_s, wait_cap, settle
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.commands: list[str] = []
        self.log: list[tuple[float, str]] = []
        self.variables: dict[str, str] = {}
        self.on_play: dict[str, Callable[[], object]] = {}
        self.hooks: list[Callable[[FakeAgi, str], object]] = []

    @property
    def uniqueid(self) -> str:
        return self.headers["agi_uniqueid"]

    @property
    def channel(self) -> str:
        return self.headers["agi_channel"]

    @property
    def caller(self) -> str:
        return self.headers["agi_callerid"]

    def press(self, digit: str) -> None:
        self.digits.put_nowait(digit)

    def sent(self, prefix: str) -> list[str]:
        return [c for c in self.commands if c.startswith(prefix)]

    def played(self) -> list[str]:
        return [c.split()[2].rsplit("/", 1)[1] for c in self.sent("STREAM FILE ")]

    def now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    async def command(self, text: str, timeout: float | None = None) -> AgiReply:
        if self.hung_up:
            raise AgiHangup("already hung up")
        self.commands.append(text)
        return OK

    async def _lasting(self, what: str, seconds: float) -> str | None:
        """A play or wait of ``seconds``: the key that ended it, or None."""
        self.log.append((self.now(), what))
        for hook in self.hooks:
            hook(self, what)
        if self.clock is None:
            try:
                digit: str | None = await asyncio.wait_for(self.digits.get(), seconds)
            except TimeoutError:
                digit = None
        else:
            await idle()  # the controller's tasks do what they will now (send the wake digit)
            digit = None if self.digits.empty() else self.digits.get_nowait()
            if digit is None:
                self.clock.advance(seconds)
                if self.settle is not None:
                    await self.settle()
        if digit == HANGUP:
            self.hung_up = True
            raise AgiHangup(what)
        if digit is None:
            self.log.append((self.now(), f"end {what}"))
        return digit

    async def answer(self) -> None:
        await self.command("ANSWER")

    async def stream_file(self, prompt: str, escape_digits: str = "", offset: int | None = None) -> str | None:
        await self.command(f'STREAM FILE {prompt} "{escape_digits}"' + (f" {offset}" if offset is not None else ""))
        name = prompt.rsplit("/", 1)[-1]
        if name in self.on_play:
            self.on_play.pop(name)()
        digit = await self._lasting(f"play {name}", self.prompt_s)
        return digit if digit and digit in escape_digits else None

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        await self.command(f"WAIT FOR DIGIT {timeout_ms}")
        seconds = timeout_ms / 1000 if timeout_ms >= 0 else 3600.0
        return await self._lasting("wait", seconds if self.wait_cap is None else min(seconds, self.wait_cap))

    async def exec(self, app: str, args: str = "", timeout: float | None = None) -> AgiReply:
        reply = await self.command(f'EXEC {app} "{_quote(args)}"' if args else f"EXEC {app}")
        if app == "Record":  # Asterisk writes the recording (here: 2000 bytes of silence)
            Path(args.split(",")[0]).write_bytes(b"\0" * 2000)
        return reply

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(f'SET VARIABLE {name} "{_quote(value)}"')
        self.variables[name] = value

    async def get_variable(self, name: str) -> str | None:
        await self.command(f"GET VARIABLE {name}")
        return self.variables.get(name)

    async def hangup(self) -> None:
        if not self.hung_up:
            await self.command("HANGUP")
        self.hung_up = True


def _conforms(call: FakeAgi, ami: RecordingAmi) -> tuple[AgiChannel, AmiLink]:
    return call, ami  # mypy proves here that the fakes are what the features take


class AsideAmi(RecordingAmi):
    """The switch as hold and the unclear-line script see it when they take a caller aside:
    the keeper channel's Originate answers Success, then (on the next loop round) its
    BridgeEnter into the agent's bridge; a PlayDTMF ``Receive: true`` reaches ``agi`` (the
    caller's FastAGI session, once there is one) as if the caller pressed the key."""

    def __init__(self, keeper: str) -> None:
        super().__init__()
        self.keeper = keeper
        self.agi: FakeAgi | None = None
        self.replies["Originate"] = self._originate
        self.replies["PlayDTMF"] = self._play_dtmf

    def _originate(self, action: dict[str, Any]) -> dict[str, str]:
        asyncio.get_running_loop().call_soon(self.event, {
            "Event": "BridgeEnter", "Uniqueid": action["ChannelId"], "BridgeUniqueid": "b1",
            "Channel": self.keeper, "Linkedid": action["ChannelId"]})
        return {"Response": "Success"}

    def _play_dtmf(self, action: dict[str, Any]) -> dict[str, str]:
        assert action["Receive"] == "true" and action["Async"] == "false"
        if self.agi is not None:
            self.agi.press(action["Digit"])
        return {"Response": "Success"}
