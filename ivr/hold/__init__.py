"""Rule R4 at the switch: a held caller hears music, a reminder every 30 s, the choices
at one minute (keep waiting, leave a message, call-back) and a thank-you on resume.

``service.HoldService`` (AMI + FastAGI), ``store.HoldStore`` (messages and call-backs),
``metrics.HoldMetrics``, ``http.hold_routes`` (the HTTP API)."""

from ivr.hold.service import HoldError, HoldService, HoldSettings, NoSuchCall
from ivr.hold.store import HoldStore

__all__ = ["HoldError", "HoldService", "HoldSettings", "HoldStore", "NoSuchCall"]
