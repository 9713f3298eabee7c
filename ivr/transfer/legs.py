"""The transfer target legs this node has seen on the switch, and since when it has been
following the switch without a gap (issue 17).

A new leader that takes over a transfer with no target leg on the switch must know
whether the old leader's ``Originate`` ever reached the switch. The dial's
:mod:`ivr.once` key cannot tell: it is written *before* the Originate is sent, so a
leader that died between the two left the key and no leg. Every node (the standby too)
follows the switch's AMI events: a target leg (``ChannelId`` ``<transfer id>-t``) that
existed raised a ``Newchannel`` on this node's link. So when this node has followed the
switch since before the transfer began and never saw that leg, the Originate never
reached the switch and the target may be dialled once more; when it did see the leg (now
gone), the target was dialled and the call returns to the agent; when its link had a gap
since then, it cannot know and never dials again (the caller returns with the apology).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

XFER_ID = re.compile(r"ivrx[0-9a-f]{1,24}-[0-9]{1,9}")
TARGET_LEG = re.compile(XFER_ID.pattern + "-t")
MARGIN = 1.0  # s: IVR_XFER_T0 is whole seconds of the switch's clock


class TargetLegs:
    """Fed every ``Newchannel`` and ``DialBegin`` of the link, and told of each login."""

    def __init__(self, wall: Callable[[], float] = time.time, limit: int = 10_000) -> None:
        self.wall, self.limit = wall, limit
        self.following_since: float | None = None  # wall time of the last AMI login
        self._login = 0
        self._seen: OrderedDict[str, float] = OrderedDict()

    def connected(self, login: int) -> None:
        """After the ``login``-th AMI login (and after a resync: the same login, no gap):
        a new login may have missed events."""
        if login != self._login:
            self._login, self.following_since = login, self.wall()

    def saw(self, event: Any) -> None:
        for field in ("Uniqueid", "DestUniqueid"):
            uid = event.get(field, "")
            if isinstance(uid, str) and TARGET_LEG.fullmatch(uid) and uid not in self._seen:
                self._seen[uid] = self.wall()
                while len(self._seen) > self.limit:
                    self._seen.popitem(last=False)

    def seen(self, target_uid: str) -> bool:
        return target_uid in self._seen

    def followed_since(self, t0: float) -> bool:
        """This node has followed the switch without a gap since before ``t0`` (wall time)."""
        return self.following_since is not None and self.following_since <= t0 - MARGIN
