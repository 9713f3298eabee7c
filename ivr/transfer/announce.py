"""The target's side of R5: the FastAGI route ``transfer-target``
(:class:`TargetAnnouncement`, a base of :class:`~ivr.transfer.service.TransferService`;
it carries out the machine's actions through its own base, :class:`TransferActions`).
On the target's answer it plays the announcement (who is waiting, which agent) and takes
the digit: 1 confirms, 2 refuses; the machine's deadlines decide a timeout."""

from __future__ import annotations

import structlog

from ivr.agi.channel import AgiChannel, AgiHangup
from ivr.transfer.actions import TransferActions
from ivr.transfer.settings import Transfer, TransferSettings
from ivr.transfer.targets import announcement

log = structlog.get_logger("ivr.transfer")


class TargetAnnouncement(TransferActions):
    settings: TransferSettings  # provided by TransferService

    # -- the target's FastAGI session -------------------------------------------------
    async def target_agi(self, call: AgiChannel) -> None:
        """FastAGI route ``transfer-target``: announce the caller, take 1 or 2."""
        xid = call.headers.get("agi_arg_1", "")
        xfer = self.transfers.get(xid)
        if xfer is None or call.uniqueid != xfer.target_uid:
            log.warning("transfer.unknown_target_leg", transfer=xid, uniqueid=call.uniqueid)
            return  # the dialplan hangs this leg up
        xfer.target_channel = call.channel
        m = xfer.machine
        await self._apply(xfer, m.target_answered(self.timers.now()))
        try:
            await self._confirm(call, xfer)
        except AgiHangup:
            await self._apply(xfer, m.target_hangup(self.timers.now()))
            raise

    async def _confirm(self, call: AgiChannel, xfer: Transfer) -> None:
        m = xfer.machine
        digit: str | None = None
        for prompt in announcement(xfer.caller_number, xfer.agent_number):
            if m.state != "answered":
                return
            digit = await call.stream_file(f"{self.settings.sounds}/{prompt}", "12")
            if digit:
                break
        if not digit:
            m.announcement_finished(self.timers.now())
            self.timers.poke(xfer.id)
        while m.state == "answered":
            if not digit:
                deadline = m.deadline if m.deadline is not None else self.timers.now()
                wait_ms = max(int((deadline - self.timers.now()) * 1000) + 250, 250)
                digit = await call.wait_for_digit(wait_ms)
                if not digit:
                    continue  # the timer decides the timeout (it hangs this leg up)
            actions = m.target_dtmf(self.timers.now(), digit)
            digit = None
            if m.state in ("confirmed", "completed"):
                await call.set_variable("IVR_XFER_RESULT", "confirmed")
            await self._apply(xfer, actions)
