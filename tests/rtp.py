"""RTP on loopback for the SIP tests and the SIP benchmark.

SIPp does the signalling; the SDP it sends names the port of an :class:`RtpPeer`, which
does the media: it plays a scripted caller or phone (audio frames, silence suppression,
comfort noise, RFC 4733 digits) and records every packet it receives. :class:`Heard`
turns what it received into a timeline and answers the two questions the tests ask:
was there sound in a time window (voice vs. silence), and where was a known prompt heard
(normalised cross-correlation with the prompt's own samples, so it works for u-law and
for A-law after Asterisk's transcoding).

Times are ``time.time()`` seconds, the clock of AMI ``Timestamp``s on this machine.
"""

from __future__ import annotations

import asyncio
import audioop  # deprecated in 3.11, gone in 3.13 (pydub and pyVoIP here use it too)
import random
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PCMU, PCMA, CN, EVENT = 0, 8, 13, 101
CODECS = {PCMU: "PCMU", PCMA: "PCMA"}
RATE = 8000
FRAME = 160  # samples in 20 ms
PTIME = 0.020
SPURT_GAP = 0.1  # s: a packet this much later than the last one's end starts a new talk spurt
VOICE_DBFS = -40.0  # a window louder than this has sound (prompts are ~-20, line noise -45)


# ------------------------------------------------------------------------ codecs
def encode(linear: bytes, pt: int) -> bytes:
    return audioop.lin2ulaw(linear, 2) if pt == PCMU else audioop.lin2alaw(linear, 2)


def decode(payload: bytes, pt: int) -> bytes:
    return audioop.ulaw2lin(payload, 2) if pt == PCMU else audioop.alaw2lin(payload, 2)


def ulaw_file(path: Path, pt: int = PCMU) -> bytes:
    """A raw u-law file (prompts/build, the switch's ivr-test audio) in codec ``pt``."""
    data = path.read_bytes()
    return data if pt == PCMU else encode(decode(data, PCMU), pt)


def linear(path: Path) -> np.ndarray:
    """A raw u-law file's samples as float (for :meth:`Heard.find`)."""
    return np.frombuffer(decode(path.read_bytes(), PCMU), dtype="<i2").astype(np.float64)


def silence(seconds: float, pt: int) -> bytes:
    return encode(b"\0\0" * int(seconds * RATE), pt)


def tone(hz: float, seconds: float, pt: int, dbfs: float = -20.0) -> bytes:
    """A sine at ``hz``: a phone's voice that tells who is talking (:meth:`Heard.pitch`)."""
    t = np.arange(int(seconds * RATE)) / RATE
    amp = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return encode((amp * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes(), pt)


# ------------------------------------------------------------------------ what a peer sends
@dataclass(frozen=True)
class Audio:
    """Frames of ``data`` (already in the peer's codec), one every 20 ms."""
    data: bytes


@dataclass(frozen=True)
class Quiet:
    """Nothing at all for ``seconds``: a phone that suppresses silence (VAD, no CN)."""
    seconds: float


@dataclass(frozen=True)
class ComfortNoise:
    """RFC 3389 comfort noise for ``seconds``: a payload type 13 packet (noise level
    ``level`` -dBov) at once, then one every ``every`` s, and no audio frames."""
    seconds: float
    level: int = 70
    every: float = 0.5


@dataclass(frozen=True)
class Digit:
    """An RFC 4733 telephone-event (payload type 101) lasting ``ms``."""
    digit: str
    ms: int = 200


Step = Audio | Quiet | ComfortNoise | Digit
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


@dataclass
class Packet:
    t: float
    pt: int
    payload: bytes


class RtpPeer(asyncio.DatagramProtocol):
    """One RTP endpoint on 127.0.0.1: records what arrives, sends what :meth:`play` is
    given. Asterisk (``rtp_symmetric``) sends to the SDP's port, and the peer answers to
    wherever Asterisk's packets come from, so no SDP parsing is needed."""

    def __init__(self, pt: int = PCMU) -> None:
        self.pt = pt
        self.received: list[Packet] = []
        self.remote: tuple[str, int] | None = None
        self._remote_known = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, pt: int = PCMU) -> RtpPeer:
        loop = asyncio.get_running_loop()
        peer = cls(pt)
        await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        return peer

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    # asyncio.DatagramProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass asyncio.DatagramTransport
        self._transport = transport  # type: ignore[assignment]  # but is one (sendto)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        cc = data[0] & 0x0F
        self.received.append(Packet(time.time(), data[1] & 0x7F, data[12 + 4 * cc:]))
        if self.remote is None:
            self.remote = addr
            self._remote_known.set()

    async def wait_remote(self, timeout: float) -> None:
        await asyncio.wait_for(self._remote_known.wait(), timeout)

    def _send(self, pt: int, payload: bytes, ts_step: int, marker: bool = False) -> None:
        assert self._transport is not None and self.remote is not None
        m = 0x80 if (marker or self._marker) else 0
        self._marker = False
        header = struct.pack("!BBHII", 0x80, m | pt, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc)
        self._transport.sendto(header + payload, self.remote)
        self._seq += 1
        self._ts += ts_step
        self.sent += 1

    def play(self, *steps: Step, timeout: float = 30.0) -> asyncio.Task[None]:
        """Start sending ``steps`` (after Asterisk's first packet tells where to)."""
        self._task = asyncio.ensure_future(self._play(steps, timeout))
        return self._task

    async def replace(self, *steps: Step) -> asyncio.Task[None]:
        """Stop what :meth:`play` is sending and send ``steps`` instead (same stream)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.play(*steps)

    async def _play(self, steps: tuple[Step, ...], timeout: float) -> None:
        await self.wait_remote(timeout)
        loop = asyncio.get_running_loop()
        due = loop.time()

        async def tick(seconds: float) -> None:
            nonlocal due
            due += seconds
            await asyncio.sleep(max(0.0, due - loop.time()))  # pacing: on an absolute schedule

        for step in steps:
            if isinstance(step, Audio):
                for i in range(0, len(step.data), FRAME):
                    self._send(self.pt, step.data[i:i + FRAME], FRAME)
                    await tick(PTIME)
            elif isinstance(step, Quiet):
                self._ts += int(step.seconds * RATE)
                self._marker = True
                await tick(step.seconds)
            elif isinstance(step, ComfortNoise):
                n = max(1, round(step.seconds / step.every))
                for i in range(n):
                    self._send(CN, bytes([step.level]), int(step.every * RATE), marker=i == 0)
                    await tick(step.every)
                self._marker = True
            else:
                code, frames = EVENTS[step.digit], max(1, step.ms // 20)
                for i in range(1, frames + 1):
                    end = i == frames
                    body = struct.pack("!BBH", code, (0x80 if end else 0) | 10, i * FRAME)
                    for _ in range(3 if end else 1):  # the end packet three times (RFC 4733 2.5.1.4)
                        self._send(EVENT, body, 0, marker=i == 1)
                    await tick(PTIME)
                self._ts += frames * FRAME
                self._marker = True

    def heard(self) -> Heard:
        return Heard(list(self.received))

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()


# ------------------------------------------------------------------------ what a peer heard
@dataclass
class Heard:
    """The audio a peer received, laid out on its arrival times (no packets = silence)."""

    packets: list[Packet]
    start: float = field(init=False)
    samples: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        audio = [p for p in self.packets if p.pt in CODECS]
        self.start = audio[0].t if audio else 0.0
        chunks: list[tuple[int, np.ndarray]] = []
        pos = 0
        for p in audio:
            pcm = np.frombuffer(decode(p.payload, p.pt), dtype="<i2")
            at = round((p.t - self.start) * RATE)
            # Frames of one talk spurt are laid end to end (arrival jitter would tear the
            # waveform apart); a packet arriving well after the last one ended starts a new
            # spurt at its arrival time: the gap was silence.
            if at > pos + SPURT_GAP * RATE or not chunks:
                pos = at
            chunks.append((pos, pcm))
            pos += len(pcm)
        self.samples = np.zeros(pos + FRAME, dtype=np.float64)
        for at, pcm in chunks:
            self.samples[at:at + len(pcm)] = pcm

    def payload_types(self) -> set[int]:
        return {p.pt for p in self.packets}

    def level(self, t0: float, t1: float) -> float:
        """RMS in dBFS over [t0, t1) (wall-clock seconds); -inf for no audio."""
        a, b = (max(0, int((t - self.start) * RATE)) for t in (t0, t1))
        chunk = self.samples[a:b]
        if len(chunk) == 0:
            return float("-inf")
        rms = float(np.sqrt(np.mean(chunk * chunk)))
        return 20 * np.log10(rms / 32768) if rms > 0 else float("-inf")

    def sound(self, t0: float, t1: float, window: float = 0.1) -> float:
        """Share of ``window``-long slices in [t0, t1) louder than VOICE_DBFS."""
        n = max(1, int((t1 - t0) / window))
        return sum(self.level(t0 + i * window, t0 + (i + 1) * window) > VOICE_DBFS for i in range(n)) / n

    def pitch(self, t0: float, t1: float) -> float:
        """The strongest frequency (Hz) heard in [t0, t1)."""
        a, b = (max(0, int((t - self.start) * RATE)) for t in (t0, t1))
        chunk = self.samples[a:b]
        if len(chunk) < FRAME:
            return 0.0
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk))))
        return float(np.argmax(spectrum[1:]) + 1) * RATE / len(chunk)

    def find(self, prompt: np.ndarray, after: float = 0.0) -> tuple[float, float]:
        """Where ``prompt`` (samples) best matches what was heard from ``after`` on:
        (wall-clock start, normalised correlation 0..1). 0.9+ means it was heard.

        A busy switch sends a prompt's frames late now and then without catching up
        (measured on this 2-core machine under load: gaps of 57-76 ms, a 5.76 s prompt
        sent in 5.86 s); once the lateness passes :data:`SPURT_GAP` the timeline re-anchors
        on the arrival time, so the rest of the prompt sits a little later, after a short
        silence. A prompt that does not match whole is therefore matched again piece by
        piece (:data:`PIECE` s each, in order, each at most :data:`SLIP` s after the
        previous one ended): every piece of it must still be heard, in order."""
        scored = self._scores(prompt, after)
        if scored is None:
            return 0.0, 0.0
        a, x, score = scored
        i = int(np.argmax(score))
        best = (self.start + (a + i) / RATE, float(score[i]))
        if best[1] >= WHOLE or len(prompt) < 2 * PIECE * RATE:
            return best
        for c in _peaks(score, CANDIDATES, separation=int(PIECE * RATE)):
            at, matched = _in_pieces(x, prompt, c)
            if matched > best[1]:
                best = (self.start + (a + at) / RATE, matched)
        return best

    def first(self, prompt: np.ndarray, after: float = 0.0, heard: float = 0.9) -> tuple[float, float]:
        """The earliest place from ``after`` on where ``prompt`` was heard (score at least
        ``heard``, matched as :meth:`find` does); else :meth:`find`'s best."""
        scored = self._scores(prompt, after)
        if scored is None:
            return 0.0, 0.0
        a, x, score = scored
        for c in sorted(_peaks(score, 4 * CANDIDATES, separation=len(prompt) // 2, floor=FLOOR)):
            at, matched = (c, float(score[c])) if score[c] >= WHOLE else _in_pieces(x, prompt, c)
            if matched >= heard:
                return self.start + (a + at) / RATE, matched
        return self.find(prompt, after)

    def _scores(self, prompt: np.ndarray, after: float) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(where ``after`` is in the samples, the samples from there, the normalised
        correlation of ``prompt`` at each offset)."""
        a = max(0, int((after - self.start) * RATE))
        x = self.samples[a:]
        if len(x) < len(prompt) or not len(prompt):
            return None
        n = 1 << int(np.ceil(np.log2(len(x) + len(prompt))))
        corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(prompt, n)), n)[: len(x) - len(prompt) + 1]
        norm = np.sqrt(np.maximum(_sliding_energy(x, len(prompt)), 1e-9) * float(np.dot(prompt, prompt)))
        return a, x, corr / norm


WHOLE = 0.97  # a whole-prompt match this good needs no piecewise look
PIECE = 0.25  # s: the pieces of a prompt matched one after the other
SLIP = 0.15  # s: how much later than the previous piece's end the next may be heard
CANDIDATES = 4  # whole-prompt peaks tried piece by piece
FLOOR = 0.5  # a whole-prompt score below this is not the prompt, however it is cut up


def _sliding_energy(x: np.ndarray, width: int) -> np.ndarray:
    """The sum of squares of every ``width``-long run of ``x`` (len(x) - width + 1 of them)."""
    c = np.concatenate(([0.0], np.cumsum(x * x)))
    return c[width:] - c[:-width]


def _peaks(score: np.ndarray, count: int, separation: int, floor: float = 0.0) -> list[int]:
    """Up to ``count`` highest local peaks of ``score`` (at least ``floor``), at least
    ``separation`` samples apart (the best of each ``separation``-long block)."""
    separation = max(1, separation)
    blocks = np.arange(0, len(score), separation)
    best = np.maximum.reduceat(score, blocks)
    out: list[int] = []
    for b in np.argsort(best)[::-1]:
        if best[b] < floor or len(out) == count:
            break
        lo = int(blocks[b])
        i = lo + int(np.argmax(score[lo:lo + separation]))
        if all(abs(i - j) >= separation for j in out):
            out.append(i)
    return out


def _match(x: np.ndarray, ref: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """The offset in [lo, hi] where ``ref`` best matches ``x`` (normalised correlation)."""
    lo, hi = max(0, lo), min(hi, len(x) - len(ref))
    if hi < lo:
        return lo, 0.0
    seg = x[lo:hi + len(ref)]
    corr = np.correlate(seg, ref, mode="valid")
    score = corr / np.sqrt(np.maximum(_sliding_energy(seg, len(ref)), 1e-9) * max(float(np.dot(ref, ref)), 1e-9))
    k = int(np.argmax(score))
    return lo + k, float(score[k])


def _in_pieces(x: np.ndarray, prompt: np.ndarray, near: int) -> tuple[int, float]:
    """``prompt`` matched piece by piece from about ``near`` on: (where its first piece
    was heard, the pieces' scores averaged by their loudness)."""
    size, slip = int(PIECE * RATE), int(SLIP * RATE)
    pos, start, total, weight = near, near, 0.0, 0.0
    for k in range(0, len(prompt), size):
        ref = prompt[k:k + size]
        if len(ref) < size // 2:
            break
        lo, hi = (pos - slip, pos + slip) if k == 0 else (pos - FRAME // 4, pos + slip)
        at, score = _match(x, ref, lo, hi)
        if k == 0:
            start = at
        w = float(np.dot(ref, ref))
        total, weight = total + w * score, weight + w
        pos = at + len(ref)
    return start, (total / weight if weight else 0.0)
