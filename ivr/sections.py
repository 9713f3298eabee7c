"""The controller's configuration as typed sections: one frozen dataclass per TOML table,
every default stated here and nowhere else. Features receive their own section
(``HoldConfig``, ``TransferConfig``, ...); :mod:`ivr.config` reads and checks the file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from ivr.rules.dialing import device_key
from ivr.rules.rings import Cadence


@dataclass(frozen=True)
class SwitchConfig:
    timezone: str = "Asia/Shanghai"  # local time of greetings and reports (zoneinfo name)
    tone_zone: str = "cn"  # Asterisk indications.conf zone: ring cadence (cn 1 s on / 4 s off)
    company: str = "Example"  # the XX of the greetings ({company} in prompt texts)
    language: str = "zh-CN"  # default prompt language
    languages: list[str] = field(default_factory=list)  # all prompt sets used (default [language])
    indications: str = ""  # indications.conf to read the cadence from ("" = built-in table)


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ivr"
    secret: str = ""  # env IVR_AMI_SECRET > secret_file > this
    secret_file: str = ""
    ping_interval: float = 5.0  # s between keep-alive Pings
    ping_timeout: float = 3.0  # s: no Pong and not one byte from the switch = the socket is dead
    ping_busy_timeout: float = 30.0  # s: how late a Pong may be while the switch still sends (busy)
    connect_timeout: float | None = None
    backoff_initial: float | None = None
    backoff_max: float | None = None


@dataclass(frozen=True)
class AgiConfig:
    host: str = "127.0.0.1"  # FastAGI server of the controller
    port: int = 4573
    key: str = ""  # the switch's FastAGI key: env IVR_AGI_KEY > credential agi-key > key_file > this
    key_file: str = ""  # e.g. /etc/asterisk/ivr-agi-key.conf (its IVR_AGI_KEY line is read)
    require_key: bool = True  # false: any local process may pose as Asterisk (development only)
    max_sessions: int = 200  # calls handled at once; more are refused (the dialplan falls back)
    # connections still in their header (and its sync round trip); a new one evicts the oldest.
    # Size it for the call arrival rate x the AGI round trip at peak (50 calls/s x 0.3 s = 15
    # evicted real calls to the fallback at 16 in the SIP benchmark); idle ones cost a socket.
    max_pending: int = 128
    header_timeout: float = 5.0  # s for the whole AGI header (not per line)
    idle_timeout: float = 30.0  # s a reply may be late beyond the command's own duration


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8780  # not 8088: that is Asterisk's own HTTP server
    token: str = ""  # env IVR_HTTP_TOKEN > token_file > this; "" = API closed
    token_file: str = ""
    public: list[str] = field(default_factory=lambda: ["/healthz", "/metrics"])  # no token needed
    long_call_seconds: float = 180.0  # R6: calls longer than this are reported as long
    max_connections: int = 64  # open connections; at the cap the oldest idle one is closed
    keepalive_timeout: float = 10.0  # s an idle keep-alive (or silent new) connection is kept


@dataclass(frozen=True)
class AgentConfig:
    number: str  # the agent (employee) number spoken in the greeting
    name: str = ""
    dial: str = ""  # Asterisk dial string: PJSIP/1001, Local/1001@agents ("" = PJSIP/<number>)

    @property
    def device(self) -> str:
        """The dial string, ``PJSIP/<number>`` when none is given."""
        return self.dial or f"PJSIP/{self.number}"

    @property
    def device_key(self) -> str:
        """What this agent's channels, dial string and queue member interface map onto
        (:func:`ivr.rules.dialing.device_key`): ``PJSIP/1001``, ``Local/1001@agents``."""
        return device_key(self.device)


def agents_by_device(agents: Iterable[AgentConfig]) -> dict[str, AgentConfig]:
    """``[[agents]]`` by :attr:`AgentConfig.device_key`: the one map from a device to its
    agent (the ring monitor, hold and transfer look channels up in it with ``device_key``)."""
    return {a.device_key: a for a in agents}


@dataclass(frozen=True)
class RingsConfig:
    on_ms: int | None = None  # cadence override (both or neither); None = tone zone's
    off_ms: int | None = None
    warn_rings: int = 3  # R1 alarm "warning" after this many rings without answer
    critical_rings: int = 6  # "critical" alarm; answered after more rings: apology
    reroute: bool = False  # move the call on at warn_rings
    reroute_target: str = ""  # "queue:NAME", an agent number, or a dial string ("" = next agent)
    ring_timeout: float = 60.0  # s an agent leg may ring at most

    @property
    def cadence(self) -> Cadence | None:
        if self.on_ms is None or self.off_ms is None:
            return None
        return Cadence(self.on_ms, self.off_ms)


@dataclass(frozen=True)
class SilenceConfig:
    pause: float = 5.0  # R3 s of silence after each prompt
    talk_threshold: int = 512  # TALK_DETECT energy above which the caller is talking
    talk_silence_ms: int = 1000  # silence that ends a talk burst


@dataclass(frozen=True)
class UnclearConfig:
    """R3 a line too faint or too noisy (ivr/unclear): what counts as clear speech, measured
    on the embedded switch (README "Unclear line"): a TALK_DETECT talk burst whose 20 ms
    frames reach ``clear_threshold`` (mean |sample|), lasting ``clear_min_ms`` or more and
    ending (``talk_silence_ms`` of quiet) within ``clear_max_ms`` (longer: steady noise)."""

    pause: float = 5.0  # s after each prompt (ask, ask again, goodbye) before the next step
    clear_threshold: int = 512  # about -35 dBFS; the silent-call detector's level
    clear_min_ms: int = 500
    clear_max_ms: int = 10_000
    talk_silence_ms: int = 300


@dataclass(frozen=True)
class HoldConfig:
    reminder_interval: float = 30.0  # R4 s between reminders
    choices_after: float = 60.0  # s on hold before choices and agent alert
    messages_dir: str = "/var/lib/ivr/messages"  # recorded messages (choice 2)
    message_max_seconds: int = 120
    moh_class: str = "default"
    announce: bool = True  # R4 on hold, first "please hold, I will be back within N minutes"


@dataclass(frozen=True)
class TransferConfig:
    confirm_timeout: float = 10.0  # R5 s for the target to press 1 after the announcement
    ring_limit: float = 30.0  # s the target may ring
    announce_max: float = 30.0  # s the announcement to the target may take
    # Outside numbers an agent may transfer to (regular expressions, each matched against
    # the whole number, e.g. "1[0-9]{10}"). Empty (the default): outside numbers are refused.
    allow_numbers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CallbacksConfig:
    """Call-backs the switch places itself (issue 18): agent first, then the customer
    through the dialplan context ``ivr-callback-number`` (shipped closed: route it to your
    trunk, then set ``enabled``)."""

    enabled: bool = False  # place call-backs (requests are kept either way)
    hours: str = "09:00-20:00"  # business hours, switch local time (HH:MM-HH:MM)
    days: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])  # ISO weekdays, Monday = 1
    max_attempts: int = 3  # customer attempts (no answer, busy, machine) before "failed"
    backoff: list[float] = field(default_factory=lambda: [600.0, 1800.0, 3600.0])  # s after each used attempt
    agent_retry: float = 60.0  # s to wait after an agent declined or did not answer
    agent_ring: float = 30.0  # s the agent's phone may ring
    agent_confirm: float = 10.0  # s for the agent to press 1 after the announcement
    # A controller that stops or dies mid-announcement leaves no verdict: [ivr-callback-agent]
    # asks again this many times, this many s apart (the agent hears "one moment" then music).
    agent_reasks: int = 4  # asks again after the first (5 asks in all)
    agent_reask_interval: float = 1.0  # s between two asks
    customer_ring: float = 40.0  # s the customer's phone may ring
    live_timeout: float = 8.0  # s for a key or a greeting after ours (else "no-live-answer")
    # A live answer by speech (TALK_DETECT on the customer's channel, ivr/callbacks/live.py):
    # a short greeting then quiet is a person; long speech is a machine (rules/callback.py LiveRule).
    live_threshold: int = 512  # mean |sample| of a 20 ms frame that is speech (the silent-call level)
    live_word_gap_ms: int = 300  # quiet that ends a burst of speech
    live_pause_ms: int = 800  # quiet after a short greeting: a person waiting
    live_greeting_max_ms: int = 2500  # more speech than this before such a pause: a machine
    live_min_word_ms: int = 100  # shorter bursts (a click, a breath) are not speech
    poll: float = 5.0  # s between looks at the queue (a request or a free agent also wakes it)
    # The best times a held caller may choose after pressing 3, keys 1, 2, ... in this order:
    # "asap" (as soon as possible today), "HH:00-HH:00" (the next such window, today or
    # tomorrow), "tomorrow HH:00-HH:00". A timeout or a key not offered, twice: asap.
    windows: list[str] = field(default_factory=lambda: ["asap", "14:00-20:00", "tomorrow 09:00-12:00"])
    window_timeout: float = 5.0  # s for the caller's key after the menu of windows


@dataclass(frozen=True)
class HolidayOverride:
    """The year's notice: ``id`` is greeted from ``start`` to ``end`` (inclusive) that year."""

    id: str
    start: dt.date
    end: dt.date
    year: int | None = None  # default: start's year


@dataclass(frozen=True)
class HolidayAddition:
    """An own holiday, with its greeting text per language (prompt id holiday_<id>)."""

    id: str
    start: dt.date
    end: dt.date
    name: str = ""
    yearly: bool = False  # repeat the same month/day range every year
    text: dict[str, str] = field(default_factory=dict)  # language -> greeting


@dataclass(frozen=True)
class HolidaysConfig:
    country: str = "CN"  # holidays library country code
    disabled: list[str] = field(default_factory=list)  # ids greeted like ordinary days
    # id -> holiday names as the library gives them (in English where it can); empty:
    # the built-in CN mapping (new_year, spring_festival, labour_day, mid_autumn, national_day)
    names: dict[str, list[str]] = field(default_factory=dict)
    # id -> language -> greeting text, for mapped holidays without a holiday_<id> prompt
    texts: dict[str, dict[str, str]] = field(default_factory=dict)
    overrides: list[HolidayOverride] = field(default_factory=list)
    additions: list[HolidayAddition] = field(default_factory=list)


@dataclass(frozen=True)
class AlarmsConfig:
    log: bool = True  # structured log line per alarm
    userevent: bool = True  # AMI UserEvent IvrRingAlarm
    webhook_url: str = ""  # POST JSON per alarm ("" = off)
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    webhook_queue: int = 1000  # alarms kept while the webhook is down
    webhook_deadline: float = 30.0  # s one alarm's delivery may take, retries included
    webhook_secret: str = ""  # HMAC-SHA256 key: env IVR_WEBHOOK_SECRET > credential > file > this
    webhook_secret_file: str = ""


@dataclass(frozen=True)
class PromptsConfig:
    source: str = ""  # <language>.toml source texts ("" = the catalogs shipped in the package)
    build: str = ""  # built sound files ("" = the data directory's, see ivr.resources)
    sound_prefix: str = "ivr"  # Asterisk sound path: <prefix>/<language>/<id>


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:////var/lib/ivr/ivr.db"  # or postgresql://user@host/db
    timeout: float = 5.0  # s, each database call (one transaction); missed: the database is "down"
    connect_timeout: float = 5.0  # s, opening the database (a server that accepts and never answers)
    retry_initial: float = 1.0  # s, first wait before opening it again; doubles up to retry_max
    retry_max: float = 30.0
    # Events wait here on local disk while the database is away ("" = the SQLite file's
    # directory, or spool/ in the data directory for PostgreSQL: /var/lib/ivr/spool under systemd).
    spool_dir: str = ""
    spool_max_mb: float = 256.0  # beyond this, events are dropped and counted (spool_full)
    queue_size: int = 1000  # events held in memory before they overflow to the spool


@dataclass(frozen=True)
class ClusterConfig:
    """Controller pairs (README "Controller pairs"): nodes with the same ``switch`` name and
    the same PostgreSQL ``[database] url`` elect one leader by a lease row in PostgreSQL."""

    node: str = ""  # this node's name, unique in the pair ("" = no cluster: always the leader)
    switch: str = "default"  # the lease's name: one leader per switch; on every record (issue 17)
    # This node's API as the other nodes reach it (http://host:port): a standby forwards a
    # changing request to its switch's leader there ("" = http://[http] host:port unless
    # that is a wildcard address: then no node can forward to this one).
    advertise: str = ""
    forward_timeout: float = 5.0  # s a standby waits for the leader's answer to a forwarded request
    lease_ttl: float = 1.2  # s the lease lasts after each renewal, by PostgreSQL's clock
    renew_interval: float = 0.3  # s between the leader's renewals
    poll_interval: float = 0.2  # s between a standby's attempts to take an expired lease
    margin: float = 0.25  # s the leader stops acting before its lease can expire
    late_limit: float = 10.0  # s an action that fell due while no node led is still sent by the new leader
    # The one-send claims (ivr_action) have a pool of their own: claims never queue behind
    # each other's round trips or behind record writes. A claim (waiting for a connection,
    # then its statements) past claim_timeout s: the action is sent anyway, unrecorded.
    claim_connections: int = 4
    claim_timeout: float = 1.0


@dataclass(frozen=True)
class Config:
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    agents: list[AgentConfig] = field(default_factory=list)  # rung in this order
    rings: RingsConfig = field(default_factory=RingsConfig)
    silence: SilenceConfig = field(default_factory=SilenceConfig)
    hold: HoldConfig = field(default_factory=HoldConfig)
    unclear: UnclearConfig = field(default_factory=UnclearConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    holidays: HolidaysConfig = field(default_factory=HolidaysConfig)
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    path: str = ""  # the file it was read from ("" = defaults)
    warnings: list[str] = field(default_factory=list)  # not errors: world-readable secrets
