"""R5 Warm transfer: complete only on a confirmed, live answer; never drop the caller.

::

    offered ──ringing──→ ringing ──answered──→ answered ──DTMF 1──→ confirmed → completed
       │                   │                      │
       │ busy / failed /   │ no answer within     │ DTMF 2 → refused
       │ ring limit        │ ring_limit           │ no DTMF 1 within confirm_timeout → timeout
       │                   │                      │ target hangs up
       └───────────────────┴──────────────────────┴──→ (failure state) → returned

``offer`` plays the reason to the caller (consent) and dials the target. On answer the
target hears the announcement (who is waiting, who transfers, "press 1 / 2"); only a DTMF 1
counts as a confirmation, so voicemail or an answering machine ends in ``timeout``. The
confirmation window is ``confirm_timeout`` after the announcement has finished (or after
``announce_max + confirm_timeout`` from answer if the end of the announcement is never
reported).

On confirmation, :class:`Connect` bridges caller and target, plays the thank-you to the
caller and drops the transferring agent. On any failure, :class:`ReturnCaller` sends the
caller back, with the apology, to the transferring agent, or to the queue if that agent has
hung up. An agent hang-up never completes the transfer blindly: the caller keeps waiting for
the confirmation. Only the caller hanging up ends the transfer without returning them.

Every state change emits :class:`StateChanged` (for the ``IvrTransfer`` UserEvent); the
states are: offered, ringing, answered, confirmed, completed, refused, timeout, noanswer,
busy, hangup (target hung up before confirming), returned, abandoned (caller hung up).
"""

from __future__ import annotations

from dataclasses import dataclass

ANNOUNCEMENT = ("transfer_announce_caller", "transfer_announce_agent", "transfer_announce_menu")


@dataclass(frozen=True)
class StateChanged:
    state: str
    reason: str = ""


@dataclass(frozen=True)
class PlayToCaller:
    prompt: str


@dataclass(frozen=True)
class Dial:
    """Dial the transfer target; ``timeout`` is the ring limit in seconds."""

    target: str
    timeout: float


@dataclass(frozen=True)
class Announce:
    """Play the announcement prompts to the target, then listen for 1 / 2."""

    prompts: tuple[str, ...] = ANNOUNCEMENT


@dataclass(frozen=True)
class Connect:
    """Bridge caller and target, play ``thanks`` to the caller, drop the agent if present."""

    target: str
    thanks: str = "transfer_thanks"
    drop_agent: bool = True


@dataclass(frozen=True)
class HangupTarget:
    """Cancel the dial or hang up the target leg."""


@dataclass(frozen=True)
class ReturnCaller:
    """Send the caller back (``to``: "agent" | "queue") with the apology."""

    to: str
    apology: bool = True
    reason: str = ""


TransferAction = StateChanged | PlayToCaller | Dial | Announce | Connect | HangupTarget | ReturnCaller
PENDING = frozenset({"idle", "offered", "ringing", "answered"})
TERMINAL = frozenset({"completed", "returned", "abandoned"})


class WarmTransfer:
    """One warm transfer of one caller to ``target`` (an Asterisk dial string)."""

    def __init__(
        self,
        target: str,
        ring_limit: float = 30.0,
        confirm_timeout: float = 10.0,
        announce_max: float = 30.0,
    ) -> None:
        if ring_limit <= 0 or confirm_timeout <= 0 or announce_max < 0:
            raise ValueError("transfer timings must be positive")
        self.target = target
        self.ring_limit = ring_limit
        self.confirm_timeout = confirm_timeout
        self.announce_max = announce_max
        self.state = "idle"
        self.agent_present = True
        self.deadline: float | None = None
        self.history: list[str] = []

    @classmethod
    def taken_over(cls, target: str, ring_limit: float, confirm_timeout: float, announce_max: float, *,
                   state: str, deadline: float, agent_present: bool) -> WarmTransfer:
        """A transfer another controller started and died in, as the switch shows it:
        ``offered`` (no target leg yet: the new controller dials it; ``deadline``, the ring
        limit left), the target ringing (``deadline``: the ring limit from the offer) or
        answered (its announcement died with that controller: ``deadline``, the
        confirmation window)."""
        if state not in ("offered", "ringing", "answered"):
            raise ValueError(f"a transfer is taken over offered, ringing or answered, not {state!r}")
        machine = cls(target, ring_limit, confirm_timeout, announce_max)
        machine.state = state
        machine.history = list(dict.fromkeys(["offered", state]))
        machine.deadline, machine.agent_present = deadline, agent_present
        return machine

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def next_deadline(self) -> float | None:
        return self.deadline if self.state in PENDING else None

    def _to(self, state: str, reason: str = "") -> StateChanged:
        self.state = state
        self.history.append(state)
        return StateChanged(state, reason)

    def _fail(self, state: str, reason: str) -> list[TransferAction]:
        self.deadline = None
        to = "agent" if self.agent_present else "queue"
        return [
            self._to(state, reason),
            HangupTarget(),
            ReturnCaller(to, True, reason),
            self._to("returned", reason),
        ]

    # -- events -------------------------------------------------------------------------
    def offer(self, now: float) -> list[TransferAction]:
        """The agent starts the transfer: the caller hears why, the target is dialled."""
        if self.state != "idle":
            return []
        self.deadline = now + self.ring_limit
        return [self._to("offered"), PlayToCaller("transfer_reason"),
                Dial(self.target, self.ring_limit)]

    def target_ringing(self, now: float) -> list[TransferAction]:
        if self.state != "offered":
            return []
        return [self._to("ringing")]

    def target_busy(self, now: float, reason: str = "busy") -> list[TransferAction]:
        """The dial failed: busy, congestion, unreachable, rejected."""
        if self.state not in ("offered", "ringing"):
            return []
        return self._fail("busy", reason)

    def target_answered(self, now: float) -> list[TransferAction]:
        if self.state not in ("offered", "ringing"):
            return []
        self.deadline = now + self.announce_max + self.confirm_timeout
        return [self._to("answered"), Announce()]

    def announcement_finished(self, now: float) -> list[TransferAction]:
        """The target has heard the whole announcement: the confirmation window opens."""
        if self.state == "answered":
            self.deadline = now + self.confirm_timeout
        return []

    def target_dtmf(self, now: float, digit: str) -> list[TransferAction]:
        """Only a DTMF 1 from the answered target confirms; 2 refuses."""
        if self.state != "answered":
            return []
        if digit == "1":
            self.deadline = None
            connect = Connect(self.target, drop_agent=self.agent_present)
            return [self._to("confirmed"), connect, self._to("completed")]
        if digit == "2":
            return self._fail("refused", "refused")
        return []

    def target_hangup(self, now: float) -> list[TransferAction]:
        if self.state not in PENDING - {"idle"}:
            return []
        return self._fail("hangup", "target-hangup")

    def agent_hangup(self, now: float) -> list[TransferAction]:
        """The transferring agent left: the transfer goes on, a failure goes to the queue."""
        self.agent_present = False
        return []

    def caller_hangup(self, now: float) -> list[TransferAction]:
        if self.state not in PENDING:
            return []
        self.deadline = None
        cancel: list[TransferAction] = [] if self.state == "idle" else [HangupTarget()]
        return [self._to("abandoned", "caller-hangup"), *cancel]

    def on_timer(self, now: float) -> list[TransferAction]:
        if self.deadline is None or now < self.deadline or self.state not in PENDING:
            return []
        if self.state in ("offered", "ringing"):
            return self._fail("noanswer", "noanswer")
        if self.state == "answered":
            return self._fail("timeout", "no-confirmation")
        return []
