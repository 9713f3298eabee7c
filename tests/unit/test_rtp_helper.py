"""tests/rtp.py, the RTP peer and classifier the SIP tests rely on: two peers on loopback
(no switch), what one sends the other hears, and the classifier finds it."""

from __future__ import annotations

import asyncio

import numpy as np

from tests import REPO
from tests.fakes import until
from tests.rtp import (
    CN,
    EVENT,
    PCMA,
    PCMU,
    Audio,
    ComfortNoise,
    Digit,
    Heard,
    Packet,
    Quiet,
    RtpPeer,
    decode,
    encode,
    linear,
    silence,
    tone,
)

PROMPT = REPO / "prompts/build/en-US/hold_thanks.ulaw"  # built before the unit tests run


async def _pair(pt: int) -> tuple[RtpPeer, RtpPeer]:
    a, b = await RtpPeer.open(pt), await RtpPeer.open(pt)
    a.remote = ("127.0.0.1", b.port)
    a._remote_known.set()  # a sends first, as Asterisk does
    return a, b


async def test_what_one_peer_sends_the_other_hears_and_finds() -> None:
    a, b = await _pair(PCMA)
    try:
        beep = tone(1000, 0.5, PCMA)
        await asyncio.wait_for(a.play(Audio(silence(0.2, PCMA))), 5)
        await asyncio.wait_for(a.play(Quiet(0.3), Audio(beep), ComfortNoise(0.4, every=0.2), Digit("5", 60)), 5)
        await until(lambda: len(b.received) == a.sent, 2, "loopback delivery of the last datagrams")
        heard = b.heard()
        assert heard.payload_types() == {PCMA, CN, EVENT}
        assert [p.payload for p in b.received if p.pt == CN] == [bytes([70])] * 2
        events = [p.payload for p in b.received if p.pt == EVENT]
        assert events[0][0] == 5 and events[-1][1] & 0x80 and len(events) == 3 + 2  # 3 frames, end sent 3x
        pcm = np.frombuffer(decode(beep, PCMA), dtype="<i2").astype(np.float64)
        at, score = heard.find(pcm)
        assert score > 0.99
        assert 0.45 <= at - heard.start <= 0.6  # 0.2 s of silence, then 0.3 s of nothing
        assert abs(heard.pitch(at + 0.1, at + 0.4) - 1000) < 20
        assert heard.sound(at + 0.05, at + 0.45) == 1.0
        assert heard.sound(heard.start + 0.25, at - 0.05) == 0.0
    finally:
        a.close()
        b.close()


def test_a_late_packet_starts_a_new_talk_spurt_and_jitter_does_not_tear_one_apart() -> None:
    frame = tone(500, 0.02, PCMU)
    t0 = 1000.0
    jittery = [Packet(t0 + 0.02 * i + (0.004 if i % 2 else -0.003), PCMU, frame) for i in range(10)]
    later = [Packet(t0 + 1.0 + 0.02 * i, PCMU, frame) for i in range(5)]
    heard = Heard(jittery + later)
    # The first spurt laid end to end from the first arrival (t0 - 3 ms); the second at its
    # own arrival, 1.003 s later; one spare frame at the end.
    assert len(heard.samples) == round(1.003 * 8000) + 5 * 160 + 160
    assert np.count_nonzero(heard.samples[10 * 160:round(1.003 * 8000)]) == 0
    assert heard.sound(t0, t0 + 0.2) == 1.0 and heard.sound(t0 + 0.3, t0 + 0.9) == 0.0


def _sent_late(audio: bytes, t0: float, late_after: int, stalls: list[float]) -> list[Packet]:
    """``audio`` (u-law) in 20 ms packets from ``t0``; from packet ``late_after`` on, a
    sender that fell behind: each stall delays every later packet, never caught up."""
    out, delay = [], 0.0
    for i in range(len(audio) // 160):
        if i >= late_after and i - late_after < len(stalls):
            delay += stalls[i - late_after]
        out.append(Packet(t0 + 0.02 * i + delay, PCMU, audio[i * 160:(i + 1) * 160]))
    return out


def test_a_prompt_sent_late_in_places_is_still_heard_in_full_and_in_order() -> None:
    """Measured on a busy 2-core machine: the switch sends a prompt's frames up to 76 ms
    late and never catches up; past SPURT_GAP the timeline re-anchors (a short silence in
    the middle). The prompt is still found, piece by piece, where it started."""
    audio = PROMPT.read_bytes()
    pcm = linear(PROMPT)
    packets = _sent_late(audio, 100.0, 40, [0.05, 0.04, 0.06])  # 150 ms behind after 3 frames
    heard = Heard([Packet(99.0 + 0.02 * i, PCMU, silence(0.02, PCMU)) for i in range(50)] + packets)
    whole = heard._scores(pcm, 0.0)
    assert whole is not None and float(np.max(whole[2])) < 0.9  # one piece no longer lines up
    at, score = heard.find(pcm)
    assert score >= 0.9 and abs(at - 100.0) < 0.03
    assert heard.first(pcm, heard=0.9) == (at, score)


def test_first_is_the_earliest_heard_and_other_audio_is_not_a_prompt() -> None:
    audio = PROMPT.read_bytes()
    pcm = linear(PROMPT)
    n = len(audio) // 160
    late = _sent_late(audio, 100.0, 30, [0.05, 0.06, 0.05])  # the first one sent late
    clean = [Packet(110.0 + 0.02 * i, PCMU, audio[i * 160:(i + 1) * 160]) for i in range(n)]
    heard = Heard(late + clean)
    at, score = heard.first(pcm, heard=0.9)
    assert abs(at - 100.0) < 0.03 and score >= 0.9  # not the later, cleaner copy
    assert heard.find(pcm)[0] >= 110.0 - 0.03  # the best match is the clean one
    noise = np.random.default_rng(7).integers(-8000, 8000, len(pcm)).astype(np.int16).tobytes()
    other = Heard([Packet(200.0 + 0.02 * i, PCMU, encode(noise[i * 320:(i + 1) * 320], PCMU)) for i in range(n)])
    assert other.find(pcm)[1] < 0.3 and other.first(pcm)[1] < 0.3
