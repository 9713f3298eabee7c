"""Prompt audio: decode, trim and normalise a recording or espeak-ng's speech into what
Asterisk plays (8 kHz mono 16-bit ``.wav`` and raw u-law ``.ulaw``), and the test audio of
the integration tests. :mod:`ivr.prompts` builds whole prompt sets with it."""

from __future__ import annotations

import functools
import io
import json
import os
import random
import subprocess
import tempfile
from array import array
from pathlib import Path
from typing import Any

from ivr.catalog import PromptError

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
CHANNELS = 1
TARGET_RMS_DBFS = -18.0
PEAK_CEILING_DBFS = -1.0
TRIM_BELOW_PEAK_DB = 40.0
TRIM_KEEP_MS = 20
MANIFEST = "manifest.json"

# Test audio for the integration tests (caller side of a Local channel).
TEST_SPEECH_TEXT = "hello, I have a question about my bill"
TEST_SPEECH_VOICE = "en-us"
TEST_SPEECH_RMS_DBFS = -20.0
TEST_NOISE_RMS_DBFS = -45.0
TEST_NOISE_SECONDS = 10.0
TEST_SILENCE_SECONDS = 10.0
TEST_FAINT_RMS_DBFS = -40.0  # a caller far from the microphone (the unclear-line rule)
TEST_LOUD_NOISE_RMS_DBFS = -20.0  # a noisy line: noise as loud as normal speech
TEST_LOUD_NOISE_SECONDS = 20.0
# A person answering a call-back says a short greeting and waits; an answering machine
# talks on, then beeps (issue 18: a live answer by speech).
TEST_HELLO_TEXT = "hello?"
TEST_MACHINE_TEXT = ("Hi, you have reached the Wang family. We cannot take your call right now. "
                     "Please leave your name and number after the tone, and we will call you back.")
TEST_BEEP_HZ = 1000


# --- audio processing -----------------------------------------------------------------


def _audio_segment() -> Any:
    from pydub import AudioSegment  # noqa: PLC0415 (pydub imports audioop: only when needed)

    return AudioSegment


def _to_telephony(path: Path) -> Any:
    """Decode any audio file to an 8 kHz mono 16-bit AudioSegment (ffmpeg resampler)."""
    segment_cls = _audio_segment()
    try:
        if path.suffix.lower() == ".wav":
            # pydub leaves a wav file it reads directly open: hand it an open file.
            with path.open("rb") as f:
                seg = segment_cls.from_file(f, format="wav")
        else:
            seg = segment_cls.from_file(str(path))  # ffmpeg reads the path itself
        buf = seg.export(
            io.BytesIO(),
            format="wav",
            parameters=["-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS), "-acodec", "pcm_s16le"],
        )
        buf.seek(0)
        return segment_cls.from_wav(buf)
    except Exception as exc:  # pydub raises bare exceptions from ffmpeg and wave
        raise PromptError(f"{path}: cannot decode audio: {exc}".strip(), file=str(path)) from exc


def _trim(seg: Any) -> Any:
    from pydub.silence import detect_leading_silence  # noqa: PLC0415 (pydub imports audioop)

    threshold = seg.max_dBFS - TRIM_BELOW_PEAK_DB
    start = detect_leading_silence(seg, silence_threshold=threshold, chunk_size=5)
    tail = detect_leading_silence(seg.reverse(), silence_threshold=threshold, chunk_size=5)
    end = len(seg) - tail
    return seg[max(0, start - TRIM_KEEP_MS) : min(len(seg), end + TRIM_KEEP_MS)]


def _normalise(seg: Any, target_rms: float = TARGET_RMS_DBFS) -> Any:
    gain = min(target_rms - seg.dBFS, PEAK_CEILING_DBFS - seg.max_dBFS)
    return seg.apply_gain(gain)


def process_audio(path: Path, *, name: str = "") -> Any:
    """Decode, resample, trim and normalise ``path``; see the module docstring."""
    seg = _to_telephony(path)
    if len(seg) == 0 or seg.rms == 0:
        raise PromptError(f"{name or path}: the audio is empty or silent", file=str(path))
    return _normalise(_trim(seg))


def write_audio(seg: Any, out_dir: Path, name: str) -> float:
    """Write ``<name>.wav`` and ``<name>.ulaw`` atomically; return the duration in seconds."""
    from pydub.utils import audioop  # noqa: PLC0415 (the audioop pydub itself uses)

    seg = seg.set_channels(CHANNELS).set_frame_rate(SAMPLE_RATE).set_sample_width(SAMPLE_WIDTH)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_buf = seg.export(io.BytesIO(), format="wav")
    atomic_write(out_dir / f"{name}.wav", wav_buf.getvalue())
    atomic_write(out_dir / f"{name}.ulaw", audioop.lin2ulaw(seg.raw_data, SAMPLE_WIDTH))
    return round(float(seg.frame_count()) / SAMPLE_RATE, 3)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _espeak(text: str, voice: str, wav: Path) -> None:
    try:
        proc = subprocess.run(
            ["espeak-ng", "-v", voice, "-b", "1", "-w", str(wav)],
            input=text.encode(),
            capture_output=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        raise PromptError("espeak-ng is not installed (apt-get install espeak-ng)") from None
    if proc.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
        err = proc.stderr.decode(errors="replace").strip()
        raise PromptError(f"espeak-ng -v {voice} failed: {err or 'no audio'}", voice=voice)


def synthesise(text: str, voice: str) -> Any:
    """Speak ``text`` with espeak-ng and process it like any prompt."""
    seg = _to_telephony_tts(text, voice)
    if len(seg) == 0 or seg.rms == 0:
        raise PromptError(f"espeak-ng -v {voice} {text!r}: no sound", voice=voice)
    return _normalise(_trim(seg))


@functools.cache
def espeak_version() -> str:
    try:
        out = subprocess.run(
            ["espeak-ng", "--version"], capture_output=True, check=False, timeout=10
        ).stdout
    except FileNotFoundError:
        raise PromptError("espeak-ng is not installed (apt-get install espeak-ng)") from None
    return out.decode(errors="replace").strip()


# --- test audio -----------------------------------------------------------------------


def _pink_noise(seconds: float, rms_dbfs: float, seed: int = 1) -> Any:
    """Seeded pink noise (Paul Kellet's filter) at ``rms_dbfs``, 8 kHz mono 16-bit."""
    rng = random.Random(seed)  # noqa: S311 - reproducible noise, not a secret
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = 0.0
    raw: list[float] = []
    for _ in range(int(seconds * SAMPLE_RATE)):
        white = rng.uniform(-1.0, 1.0)
        b0 = 0.99886 * b0 + white * 0.0555179
        b1 = 0.99332 * b1 + white * 0.0750759
        b2 = 0.96900 * b2 + white * 0.1538520
        b3 = 0.86650 * b3 + white * 0.3104856
        b4 = 0.55000 * b4 + white * 0.5329522
        b5 = -0.7616 * b5 - white * 0.0168980
        raw.append(b0 + b1 + b2 + b3 + b4 + b5 + b6 + white * 0.5362)
        b6 = white * 0.115926
    mean = sum(raw) / len(raw)
    rms = (sum((x - mean) ** 2 for x in raw) / len(raw)) ** 0.5
    scale = 32768 * 10 ** (rms_dbfs / 20) / rms
    samples = array("h", (max(-32768, min(32767, round((x - mean) * scale))) for x in raw))
    return _audio_segment()(
        samples.tobytes(), frame_rate=SAMPLE_RATE, sample_width=SAMPLE_WIDTH, channels=CHANNELS
    )


def make_test_audio(out_dir: str | os.PathLike[str]) -> dict[str, float]:
    """Write the caller-side test audio as ``<name>.wav`` and ``<name>.ulaw`` in ``out_dir``.

    * ``caller_speech``: 1 s of digital silence, then espeak-ng saying
      "hello, I have a question about my bill" at -20 dBFS RMS;
    * ``line_noise``: 10 s of steady pink noise at -45 dBFS RMS, which a silence detector
      must treat as silence;
    * ``silence``: 10 s of digital silence;
    * ``caller_speech_faint``: ``caller_speech`` at -40 dBFS RMS (a faint line);
    * ``line_noise_loud``: 20 s of pink noise at -20 dBFS RMS (a noisy line);
    * ``caller_hello``: 1 s of digital silence, then "hello?" at -20 dBFS RMS (a person
      answering a call-back);
    * ``machine_greeting``: 0.5 s of digital silence, an answering machine's greeting
      (:data:`TEST_MACHINE_TEXT`, about 8 s) at -20 dBFS RMS, 0.3 s of silence, a 0.5 s
      1 kHz beep.

    Returns name -> duration in seconds (also written to ``manifest.json``).
    """
    out = Path(out_dir)
    segment_cls = _audio_segment()
    speech = _normalise(
        _trim(_to_telephony_tts(TEST_SPEECH_TEXT, TEST_SPEECH_VOICE)), TEST_SPEECH_RMS_DBFS
    )
    silence_1s = segment_cls.silent(duration=1000, frame_rate=SAMPLE_RATE)
    hello = _normalise(_trim(_to_telephony_tts(TEST_HELLO_TEXT, TEST_SPEECH_VOICE)), TEST_SPEECH_RMS_DBFS)
    machine = _normalise(_trim(_to_telephony_tts(TEST_MACHINE_TEXT, TEST_SPEECH_VOICE)), TEST_SPEECH_RMS_DBFS)
    audio = {
        "caller_speech": silence_1s + speech,
        "caller_speech_faint": silence_1s + speech.apply_gain(TEST_FAINT_RMS_DBFS - TEST_SPEECH_RMS_DBFS),
        "line_noise_loud": _pink_noise(TEST_LOUD_NOISE_SECONDS, TEST_LOUD_NOISE_RMS_DBFS, seed=2),
        "caller_hello": silence_1s + hello,
        "machine_greeting": silence_1s[:500] + machine + silence_1s[:300] + _beep(0.5),
        "line_noise": _pink_noise(TEST_NOISE_SECONDS, TEST_NOISE_RMS_DBFS),
        "silence": segment_cls.silent(
            duration=int(TEST_SILENCE_SECONDS * 1000), frame_rate=SAMPLE_RATE
        ),
    }
    durations = {name: write_audio(seg, out, name) for name, seg in audio.items()}
    manifest = {
        "caller_speech": {"duration": durations["caller_speech"], "text": TEST_SPEECH_TEXT,
                          "leading_silence": 1.0, "rms_dbfs": TEST_SPEECH_RMS_DBFS},
        "line_noise": {"duration": durations["line_noise"], "kind": "pink noise",
                       "rms_dbfs": TEST_NOISE_RMS_DBFS},
        "silence": {"duration": durations["silence"], "kind": "digital silence"},
        "caller_speech_faint": {"duration": durations["caller_speech_faint"], "text": TEST_SPEECH_TEXT,
                                "leading_silence": 1.0, "rms_dbfs": TEST_FAINT_RMS_DBFS},
        "line_noise_loud": {"duration": durations["line_noise_loud"], "kind": "pink noise",
                            "rms_dbfs": TEST_LOUD_NOISE_RMS_DBFS},
        "caller_hello": {"duration": durations["caller_hello"], "text": TEST_HELLO_TEXT, "leading_silence": 1.0,
                         "speech": round(len(hello) / 1000, 3), "rms_dbfs": TEST_SPEECH_RMS_DBFS},
        "machine_greeting": {"duration": durations["machine_greeting"], "text": TEST_MACHINE_TEXT,
                             "leading_silence": 0.5, "speech": round(len(machine) / 1000, 3),
                             "rms_dbfs": TEST_SPEECH_RMS_DBFS, "beep_hz": TEST_BEEP_HZ},
    }
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return durations


def _beep(seconds: float) -> Any:
    """An answering machine's beep: a :data:`TEST_BEEP_HZ` tone at -12 dBFS peak."""
    from pydub.generators import Sine  # noqa: PLC0415 (pydub imports audioop: only when needed)

    return Sine(TEST_BEEP_HZ, sample_rate=SAMPLE_RATE).to_audio_segment(duration=int(seconds * 1000), volume=-12.0)


def _to_telephony_tts(text: str, voice: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="ivr-tts-") as tmp:
        wav = Path(tmp) / "tts.wav"
        _espeak(text, voice, wav)
        return _to_telephony(wav)
