"""What the features use of an AMI connection, as a type: :class:`AmiLink` is what
:class:`~ivr.ami.connection.AmiConnection` offers them (subscribe to events, run after each
login, send an action, know whether it is up), so a service can be handed the real
connection or the tests' in-process one (tests/fakes.py ``RecordingAmi``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ivr.ami.connection import ConnectedCallback, EventCallback


class AmiLink(Protocol):
    connects: int  # successful logins so far (1 = first, 2+ = reconnects)

    @property
    def connected(self) -> bool: ...
    def subscribe(self, event: str, callback: EventCallback) -> Callable[[], None]: ...
    def on_connected(self, callback: ConnectedCallback) -> None: ...
    async def action(self, action: dict[str, Any], timeout: float = 10.0, *,
                     as_list: bool | None = None) -> Any: ...
