"""The benchmarks' core functions run on tiny inputs (counts, never timings: benchmarks
report, they do not gate CI)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.unit.test_cluster import pg  # noqa: F401 - the PostgreSQL fixture

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import ami_ingest  # noqa: E402 - from bench/, on the path just above
import claims  # noqa: E402 - from bench/, on the path just above
import concurrent_calls  # noqa: E402 - from bench/, on the path just above
import controller_scale  # noqa: E402 - from bench/, on the path just above
import records_write  # noqa: E402 - from bench/, on the path just above


async def test_ami_ingest_replays_the_recorded_stream_through_both_paths() -> None:
    template = ami_ingest.load_template()
    small = template[:400]
    data, events = ami_ingest.build_stream(small, copies=2, spread=1.0)
    assert events == 800
    result = await ami_ingest.run_ingest(data, events, rounds=1)
    assert result["bare"]["dispatched"] == events
    assert result["controller"]["dispatched"] == events
    assert result["ratio"] > 0


async def test_ami_ingest_decides_the_recorded_ring_alarms() -> None:
    template = ami_ingest.load_template()
    data, _events = ami_ingest.build_stream(template, copies=2, spread=3.0)
    result = await ami_ingest.controller_path(data)
    per_copy = sum(1 for h in template if dict(h).get("UserEvent") == "IvrRingAlarm")
    assert per_copy > 0
    assert sum(result["alarms"].values()) == 2 * per_copy  # the same decisions as on the switch
    assert result["channels_left"] == 0 and result["legs_left"] == 0


def test_build_stream_gives_each_copy_its_own_ids() -> None:
    event = [("Event", "Newchannel"), ("Timestamp", "100.000000"), ("Channel", "Local/s0@c-0000000a;1"),
             ("Uniqueid", "1.5"), ("Linkedid", "1.5")]
    data, n = ami_ingest.build_stream([event], copies=2, spread=0.5)
    text = data.decode()
    assert n == 2
    assert "Uniqueid: 1.5\r\n" in text and "Uniqueid: 1.5-1\r\n" in text
    assert "Local/s0@c-0001000a;1" in text and "Timestamp: 100.500000" in text


def _agi(event: str, t: float, channel: str, command: str, uid: str = "u1") -> dict[str, str]:
    return {"Event": event, "Timestamp": f"{t:.6f}", "Channel": channel, "Command": command, "Uniqueid": uid}


def test_concurrent_calls_analysis_on_synthetic_events() -> None:
    ch = "Local/s0x0@bench-silent-00000001;1"
    hold = "Local/c0@bench-hold-caller-00000002;1"
    q = "Local/q0@bench-queue-listen-00000003"
    events = [
        _agi("AGIExecStart", 10.0, ch, "ANSWER"), _agi("AGIExecEnd", 10.001, ch, "ANSWER"),
        _agi("AGIExecStart", 10.002, ch, "SET VARIABLE IVR_GREETING x"),
        _agi("AGIExecEnd", 10.003, ch, "SET VARIABLE IVR_GREETING x"),
        _agi("AGIExecStart", 10.004, ch, "STREAM FILE ivr/zh-CN/greeting \"0\""),
        _agi("AGIExecEnd", 13.0, ch, "STREAM FILE ivr/zh-CN/greeting \"0\""),
        _agi("AGIExecStart", 18.010, ch, 'EXEC UserEvent "IvrSilentCall,Stage: prompt2"'),
        _agi("AGIExecEnd", 18.011, ch, 'EXEC UserEvent "IvrSilentCall,Stage: prompt2"'),
        {"Event": "UserEvent", "UserEvent": "IvrHold", "State": "start", "Uniqueid": "h1", "Timestamp": "100.0"},
        _agi("AGIExecStart", 130.020, hold, "STREAM FILE ivr/zh-CN/hold_reminder \"D\"", "h1"),
        _agi("AGIExecStart", 160.030, hold, "STREAM FILE ivr/zh-CN/hold_choices \"123D\"", "h1"),
        {"Event": "QueueCallerJoin", "Channel": q + ";1", "Timestamp": "200.0"},
        {"Event": "ChannelTalkingStart", "Channel": q + ";2", "Timestamp": "230.5"},
        {"Event": "ChannelTalkingStart", "Channel": q + ";2", "Timestamp": "232.0"},
        {"Event": "ChannelTalkingStart", "Channel": q + ";2", "Timestamp": "261.0"},
    ]
    r = concurrent_calls.analyse(events)
    assert r["silent_calls"] == 1
    assert r["pause_error"]["n"] == 1 and abs(r["pause_error"]["p50_ms"] - 10.0) < 0.01
    assert r["reminder_only"]["n"] == 1 and r["choices_only"]["n"] == 1
    assert r["baseline_first"]["n"] == 1 and r["baseline_spacing"]["n"] == 1
    assert r["agi_round_trip"]["n"] == 2  # SET VARIABLE and EXEC UserEvent (ANSWER has no reply before it)


async def test_controller_scale_runs_twenty_flows_each() -> None:
    p = controller_scale.Params(calls=20, holds=20, pause=0.2, prompt=0.02, interval=0.3, choices_after=0.6,
                                hold_for=0.7, ramp=0.2, new_calls_until=0.0)
    r = await controller_scale.run_in_process(p)
    assert r["silent_calls"] == 20 and r["released"] == 20
    assert r["pause_error"]["n"] == 60  # three pauses per call
    assert r["holds_done"] == 20
    assert r["reminder_error"]["n"] == 20 and r["choices_error"]["n"] == 20
    assert not r["failures"]


def test_benchmarks_run_the_shipped_transmit_silence_by_default(capsys) -> None:
    import common
    import pytest

    shipped = (common.ROOT / "asterisk" / "asterisk.conf").read_text()
    assert common.with_transmit_silence(shipped, None) == shipped  # the default run: as shipped
    assert "transmit_silence = yes" in common.with_transmit_silence(shipped, "yes")
    value = common.shipped_transmit_silence()
    assert f"transmit_silence = {value}" in shipped
    with pytest.raises(SystemExit):
        concurrent_calls.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"as shipped in asterisk/asterisk.conf, which says {value})" in help_text


def test_sip_calls_analysis_on_synthetic_events(tmp_path) -> None:
    import sip_calls

    ch = "PJSIP/anonymous-00000001"
    events = [_agi("AGIExecEnd", 10.0, ch, "STREAM FILE ivr/zh-CN/welcome \"\"")]
    for k, t in enumerate((15.01, 22.02, 29.03)):
        events.append(_agi("AGIExecStart", t, ch, f"EXEC UserEvent IvrSilentCall,Stage: s{k}"))
        events.append(_agi("AGIExecEnd", t + 2.0, ch, "STREAM FILE ivr/zh-CN/silent_prompt2 \"\""))
    events.append({"Event": "Hangup", "Timestamp": "35.0", "Channel": ch, "Cause": "16", "Uniqueid": "u1"})
    result = sip_calls.analyse_sip(events)
    assert result["pause_error"]["n"] == 3
    assert result["sip_calls_ended"] == 1 and result["sip_calls_released_by_controller"] == 1
    assert result["sip_calls_with_three_pauses"] == 1
    command = sip_calls.sipp_command(type("Sw", (), {"ports": type("P", (), {"sip": 5999})()})(),
                                     tmp_path / "s.xml", 300, 600, 50, tmp_path)
    assert command[command.index("-l") + 1] == "300" and command[-1] == "127.0.0.1:5999"
    assert (sip_calls.SCENARIO.read_text().count("NOISE_FILE")) == 2  # the comment and the rtp_stream


def test_sip_calls_held_sip_calls_on_synthetic_events(tmp_path) -> None:
    """Held calls are SIP calls: the hold reminder on the caller's PJSIP channel counts, the
    agent leg's and the held caller's hang-ups are not silent callers', and the three
    scenarios are written with the switch's audio and the hold extension."""
    import sip_calls

    caller, agent = "PJSIP/anonymous-00000002", "PJSIP/anonymous-00000003"
    events = [
        {"Event": "UserEvent", "UserEvent": "IvrHold", "State": "start", "Uniqueid": "h1", "Channel": caller,
         "Timestamp": "100.0"},
        _agi("AGIExecStart", 130.020, caller, 'STREAM FILE ivr/zh-CN/hold_reminder "D"', "h1"),
        _agi("AGIExecStart", 160.030, caller, 'STREAM FILE ivr/zh-CN/hold_choices "123D"', "h1"),
        {"Event": "UserEvent", "UserEvent": "IvrHold", "State": "resume", "Uniqueid": "h1", "Channel": caller,
         "Timestamp": "165.0"},
        {"Event": "Hangup", "Timestamp": "170.0", "Channel": agent, "Cause": "16", "CallerIDNum": "1370"},
        {"Event": "Hangup", "Timestamp": "170.1", "Channel": caller, "Cause": "16", "CallerIDNum": "1370"},
    ]
    r = sip_calls.analyse_sip(events)
    assert r["reminder_only"]["n"] == 1 and r["choices_only"]["n"] == 1
    assert abs(r["reminder_only"]["p50_ms"] - 20.0) < 0.01
    assert r["sip_holds_started"] == 1 and r["sip_holds_resumed"] == 1
    assert r["sip_calls_ended"] == 0 and r["pause_error"]["n"] == 0
    rootfs = tmp_path / "rootfs"
    files = sip_calls.scenario_files(type("Sw", (), {"rootfs": rootfs})(), tmp_path)
    noise = str(rootfs / "usr/share/asterisk/sounds/ivr-test/line_noise.ulaw")
    held = files["held"].read_text()
    assert f"INVITE sip:{sip_calls.HOLD_EXTEN}@" in held and "137[call_number]" in held and noise in held
    assert "139[call_number]" in files["silent"].read_text()
    agent = files["agents"].read_text()
    assert noise in agent and "a=sendonly" in agent and "BYE [$remcontact]" in agent
    uas = sip_calls.sipp_command(None, files["agents"], 5, 5, 50, tmp_path, uas=True, name="agents")
    assert "-l" not in uas and uas[uas.index("-m") + 1] == "5" and not uas[-1].startswith("127.0.0.1:")


async def test_claims_bench_claims_through_the_delaying_proxy(pg: str) -> None:  # noqa: F811 - the fixture
    socket_path = pg.split("host=", 1)[1] + "/.s.PGSQL.5432"
    [row] = await claims.run([2.0], [2], workers=4, seconds=0.3, rate=20, socket_path=socket_path)
    assert row["connections"] == 2 and row["closed"]["claims"] > 0
    assert row["open"]["claims"] == 6 and row["open"]["outcomes"] == {"sent": 6}


async def test_records_write_applies_both_workloads(tmp_path: Path) -> None:
    queue = records_write.workload("queue", 1)
    assert len(queue) == 2 + 3 * records_write.MEMBERS * records_write.ROUNDS + 9 + 2
    assert [e[2] for e in queue] == sorted(e[2] for e in queue)
    result = await records_write.measure(f"sqlite:///{tmp_path / 'q.db'}", queue)
    assert result["events"] == len(queue) and result["apply"]["n"] == len(queue)
    assert result["legs_of_last_call"] == records_write.MEMBERS * records_write.ROUNDS
    assert None not in result["ring_round_mean_ms"].values()  # rounds 1 and 5 measured
    typical = await records_write.measure(f"sqlite:///{tmp_path / 't.db'}", records_write.workload("typical", 2))
    assert typical["events"] == 40 and typical["legs_of_last_call"] == 2
