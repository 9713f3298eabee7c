"""tests/rtp.py, the RTP peer and classifier the SIP tests rely on: two peers on loopback
(no switch), what one sends the other hears, and the classifier finds it."""

from __future__ import annotations

import asyncio

import numpy as np

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
    silence,
    tone,
)


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
        async with asyncio.timeout(2):  # loopback delivery of the last datagrams (bounded)
            while len(b.received) < a.sent:
                await asyncio.sleep(0.005)
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
