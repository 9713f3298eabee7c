"""The SIP benchmark's whole path at a tiny N (counts only, never timings: benchmarks
report, they do not gate CI): its own embedded switch, the controller as a process, two
silent SIP callers through the trunk with RTP, two SIP callers held by a SIPp agent phone's
hold button (reminder and choices brought forward to 4 s and 8 s), two app_queue callers."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests import REPO

pytestmark = pytest.mark.integration

sys.path.insert(0, str(REPO / "bench"))


def test_sip_benchmark_at_n_2(tmp_path) -> None:  # the bench's switch runs its own event loops
    import callbench
    import common
    import sip_calls

    timing = callbench.HoldTiming(interval=4.0, choices_at=8.0, hold_for=10.0)
    sw = common.start_switch(f"bench-sip-smoke-{os.getpid()}", rtp_ports=sip_calls.RTP_PORTS)
    try:
        r = asyncio.run(sip_calls.run_n(sw, 2, 2, 50.0, tmp_path, rounds=1, timing=timing))
    finally:
        common.stop_switch(sw)
    print({k: r[k] for k in ("sip_calls_with_three_pauses", "sip_holds_resumed", "pause_error", "reminder_only",
                             "choices_only", "sipp_returncodes", "failures", "ami_reconnects")})
    assert not r["failures"], r["failures"]
    assert r["sipp_returncodes"] == {"agents": 0, "held": 0, "silent": 0}, r["sipp_errors_tail"]
    assert r["sip_calls_with_three_pauses"] == 2 and r["sip_calls_released_by_controller"] == 2
    assert r["pause_error"]["n"] == 6
    assert (r["sip_holds_started"], r["sip_holds_resumed"]) == (2, 2)
    assert r["reminder_only"]["n"] >= 2 and r["choices_only"]["n"] == 2  # 4 s and 8 s on each SIP hold
    assert r["ami_reconnects"] == 0
