"""A test-side AMI client: records every event with its arrival time and waits for
events by predicate, with a timeout (never sleep and hope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.message import Message

# Called with one event; a predicate made in a loop binds its values as defaults
# (`lambda e, c=c: ...`), which a Callable[[Message], bool] would refuse.
Predicate = Callable[..., bool]


class AmiRecorder:
    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self._logged_in = asyncio.Event()
        self.manager = Manager(
            host=host, port=port, username=username, secret=secret,
            ping_delay=3600, reconnect_timeout=1,
            loop=asyncio.get_running_loop(),
            on_login=lambda _m: self._logged_in.set(),
        )
        self.events: list[tuple[float, Message]] = []
        self._changed = asyncio.Condition()
        self.manager.register_event("*", self._on_event)

    async def _on_event(self, _manager: Manager, event: Message) -> None:
        self.events.append((time.monotonic(), event))
        async with self._changed:
            self._changed.notify_all()

    async def connect(self, timeout: float = 10.0) -> AmiRecorder:
        self.manager.connect()
        await asyncio.wait_for(self._logged_in.wait(), timeout)
        return self

    def close(self) -> None:
        self.manager.close()

    async def action(self, action: dict[str, Any], *, as_list: bool | None = None, timeout: float = 10.0) -> Any:
        fut = self.manager.send_action(dict(action), as_list=as_list)
        return await asyncio.wait_for(fut, timeout)

    def find(self, predicate: Predicate, since: int = 0) -> list[Message]:
        return [e for _, e in self.events[since:] if predicate(e)]

    async def wait_for(self, predicate: Predicate, *, timeout: float, since: int = 0, count: int = 1) -> list[Message]:
        """Wait until ``count`` events (after index ``since``) match; fail with what was seen."""
        deadline = time.monotonic() + timeout

        def matched() -> list[Message]:
            return self.find(predicate, since)

        async with self._changed:
            while len(matched()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({e.event for _, e in self.events[since:]})
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {count} matching event(s); "
                        f"got {len(matched())}; event types seen: {seen}"
                    )
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    pass
        return matched()[:count]

    async def expect_none(self, predicate: Predicate, *, within: float, since: int = 0) -> None:
        """Assert that no matching event comes within ``within`` s: waits on the event
        itself, so one arriving early fails at once (the window is the rule under test,
        e.g. "no reminder past the 30 s mark")."""
        try:
            seen = await self.wait_for(predicate, timeout=within, since=since)
        except AssertionError:
            return
        raise AssertionError(f"unexpected event within {within} s: {dict(seen[0])}")

    async def add_extension(self, context: str, exten: str, priority: int, app: str, data: str = "") -> None:
        reply = await self.action({
            "Action": "DialplanExtensionAdd", "Context": context, "Extension": exten,
            "Priority": str(priority), "Application": app, "ApplicationData": data, "Replace": "yes",
        })
        assert reply.success, f"DialplanExtensionAdd {context},{exten},{priority}: {reply}"

    async def add_dialplan(self, context: str, exten: str, steps: list[str]) -> None:
        """Add ``exten`` to ``context`` with one priority per step ("App(args)")."""
        for prio, step in enumerate(steps, start=1):
            app, _, rest = step.partition("(")
            await self.add_extension(context, exten, prio, app, rest[:-1] if rest else "")

    async def channels(self) -> list[Message]:
        replies = await self.action({"Action": "CoreShowChannels"}, as_list=True)
        return [m for m in replies if m.get("Event") == "CoreShowChannel"]

    async def originate(self, channel: str, context: str, exten: str = "s", *,
                        variables: dict[str, str] | None = None, timeout_ms: int = 30000,
                        caller_id: str = "") -> Any:
        action = {
            "Action": "Originate", "Channel": channel, "Context": context, "Exten": exten,
            "Priority": "1", "Async": "true", "Timeout": str(timeout_ms),
        }
        if caller_id:
            action["CallerID"] = caller_id
        if variables:
            action["Variable"] = ",".join(f"{k}={v}" for k, v in variables.items())
        return await self.action(action)


async def until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Poll state that raises no AMI event of its own (the controller's counters, records,
    a process's exit), bounded, every 50 ms; returns the predicate's truthy value.
    ``predicate`` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


def ts(event: Message) -> float:
    """Asterisk's own timestamp of an event (manager.conf timestampevents = yes)."""
    return float(event["Timestamp"])
