"""What the ring monitor is told: the ring cadence, the R1 thresholds, the agents by
device and the dialplan globals of the hunt (``IVR_AGENTS``, ``IVR_REROUTE_TARGET``,
``IVR_AGENT_TIMEOUT``), from the typed ``[rings]``, ``[switch]`` and ``[[agents]]``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ivr.ami.channels import device_key
from ivr.rules.dialing import reroute_entry
from ivr.rules.rings import Cadence
from ivr.sections import AgentConfig, RingsConfig, SwitchConfig, agents_by_device

_RINGS = RingsConfig()  # the defaults



@dataclass(frozen=True)
class RingSettings:
    cadence: Cadence
    warn_rings: int = _RINGS.warn_rings
    critical_rings: int = _RINGS.critical_rings
    reroute: bool = _RINGS.reroute
    agents: dict[str, str] = field(default_factory=dict)  # device ("PJSIP/1001") -> number
    hunt: str = ""  # IVR_AGENTS for ivr-agents.conf: "1001=PJSIP/1001|1002=PJSIP/1002"
    reroute_target: str = ""  # IVR_REROUTE_TARGET, a hunt entry ("queue=agents"); "" = next entry
    ring_timeout: float | None = None  # IVR_AGENT_TIMEOUT (s); None = the dialplan's default

    def __post_init__(self) -> None:
        # Devices as keys that channel names and member interfaces map onto.
        object.__setattr__(self, "agents", {device_key(d): n for d, n in self.agents.items()})

    @property
    def globals(self) -> dict[str, str]:
        """Dialplan globals the controller sets at every (re)connect."""
        out = {}
        if self.hunt:
            out["IVR_AGENTS"] = self.hunt
        if self.ring_timeout is not None:
            out["IVR_AGENT_TIMEOUT"] = f"{self.ring_timeout:g}"
        if self.reroute_target:
            out["IVR_REROUTE_TARGET"] = self.reroute_target
        return out

    @classmethod
    def from_config(cls, rings: RingsConfig, switch: SwitchConfig, agents: Sequence[AgentConfig],
                    indications: str | Path | None = None) -> RingSettings:
        """From ``[rings]`` (thresholds, cadence override, re-route), the cadence of
        ``[switch] tone_zone`` (read from ``indications`` or ``[switch] indications`` when
        given, else the built-in table) and ``[[agents]]`` number/dial."""
        indications = indications or switch.indications or None
        if rings.cadence is not None:
            cadence = rings.cadence
        elif indications is not None:
            cadence = Cadence.from_indications(Path(indications).read_text(), switch.tone_zone)
        else:
            cadence = Cadence.for_zone(switch.tone_zone)
        return cls(
            cadence=cadence,
            warn_rings=rings.warn_rings,
            critical_rings=rings.critical_rings,
            reroute=rings.reroute,
            agents={key: str(a.number) for key, a in agents_by_device(agents).items()},
            hunt="|".join(f"{a.number}={a.device}" for a in agents),
            reroute_target=reroute_entry(rings.reroute_target, agents),
            ring_timeout=rings.ring_timeout,
        )
