"""Prompt sets: source catalogs, the build into what Asterisk plays, checks and lookups.

A language's prompts are written in ``<source>/<lang>.toml`` (``language``, ``espeak_voice``
and a ``[prompts]`` table of id -> text, where ``{company}`` is the configured company
name). :func:`build_prompts` turns each id into two files Asterisk plays natively:

* ``<out>/<lang>/<id>.wav``: 16-bit signed PCM, 8 kHz, mono (``format_wav``);
* ``<out>/<lang>/<id>.ulaw``: raw G.711 u-law, 8 kHz (``format_pcm``), one byte a sample;

and ``<out>/<lang>/manifest.json`` with each prompt's duration, source and input hash.

The audio of an id is a studio recording dropped at ``<source>/recordings/<lang>/<id>.<ext>``
(any format ffmpeg reads) or, failing that, the text spoken by ``espeak-ng``. Either way
it is processed the same:

1. decoded, mixed to mono and resampled to 8 kHz by ffmpeg (driven by pydub), whose
   resampler low-pass filters, so no aliasing;
2. leading and trailing silence trimmed: anything quieter than 40 dB below the
   prompt's own peak, keeping 20 ms at each end;
3. loudness normalised: gain to bring the RMS level of the trimmed prompt to -18 dBFS,
   reduced where needed so that the peak stays at or below -1 dBFS (no clipping; a prompt
   with a high crest factor ends up a little quieter than -18 dBFS RMS).

The build is incremental: a prompt whose input hash (text, voice, company, espeak-ng
version or recording bytes, and the processing settings) matches the manifest and whose
files exist is not rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import random
import shutil
import string
import subprocess
import tempfile
import tomllib
import wave
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError, IvrError

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
CHANNELS = 1
TARGET_RMS_DBFS = -18.0
PEAK_CEILING_DBFS = -1.0
TRIM_BELOW_PEAK_DB = 40.0
TRIM_KEEP_MS = 20
# Bump when the processing changes, so that every prompt is rebuilt.
PIPELINE_VERSION = 1
PLACEHOLDERS = frozenset({"company"})
DEFAULT_COMPANY = "Example"
MANIFEST = "manifest.json"
RECORDINGS_DIR = "recordings"

# Test audio for the integration tests (caller side of a Local channel).
TEST_SPEECH_TEXT = "hello, I have a question about my bill"
TEST_SPEECH_VOICE = "en-us"
TEST_SPEECH_RMS_DBFS = -20.0
TEST_NOISE_RMS_DBFS = -45.0
TEST_NOISE_SECONDS = 10.0
TEST_SILENCE_SECONDS = 10.0

Progress = Callable[[str], None]


class PromptError(IvrError):
    """A prompt could not be built, found or installed."""

    error_id = "prompt-error"


@dataclass(frozen=True)
class Catalog:
    """The source texts of one language's prompt set."""

    language: str
    voice: str
    texts: dict[str, str]
    path: Path

    @property
    def ids(self) -> list[str]:
        return list(self.texts)

    def text(self, prompt_id: str, company: str) -> str:
        """The text of ``prompt_id`` with ``{company}`` substituted."""
        return self.texts[prompt_id].format(company=company)


@dataclass
class LanguageBuild:
    """What :func:`build_prompts` did for one language."""

    language: str
    built: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    recordings: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.built) + len(self.unchanged)

    def summary(self) -> str:
        return (
            f"{self.language}: {self.total} prompts, {len(self.built)} built, "
            f"{len(self.unchanged)} unchanged, {self.recordings} from recordings, "
            f"{len(self.removed)} removed, {self.seconds:.1f} s of audio"
        )


# --- catalogs -------------------------------------------------------------------------


def catalog_path(source_dir: str | os.PathLike[str], language: str) -> Path:
    return Path(source_dir) / f"{language}.toml"


def source_languages(source_dir: str | os.PathLike[str]) -> list[str]:
    """The languages that have a source catalog in ``source_dir``, sorted."""
    return sorted(p.stem for p in Path(source_dir).glob("*.toml"))


def load_catalog(source_dir: str | os.PathLike[str], language: str) -> Catalog:
    """Read and validate ``<source_dir>/<language>.toml``.

    Raises :class:`ConfigError` naming the file (and the key) for a missing or unreadable
    file, a missing ``espeak_voice`` or ``[prompts]``, a text that is not a non-empty
    string, a bad id, or a placeholder other than ``{company}``.
    """
    path = catalog_path(source_dir, language)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: prompt catalog not found", file=str(path)) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read prompt catalog: {exc}", file=str(path)) from exc

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {problem}", file=str(path), key=key)

    declared = data.get("language", language)
    if declared != language:
        raise fail("language", f"is {declared!r} but the file is for {language!r}")
    voice = data.get("espeak_voice")
    if not isinstance(voice, str) or not voice.strip():
        raise fail("espeak_voice", "must be a non-empty string (an espeak-ng voice name)")
    table = data.get("prompts")
    if not isinstance(table, dict) or not table:
        raise fail("prompts", "must be a non-empty table of id = text")
    texts: dict[str, str] = {}
    for prompt_id, text in table.items():
        key = f"prompts.{prompt_id}"
        if not prompt_id.replace("_", "").isalnum() or not prompt_id.isascii():
            raise fail(key, "an id must be ASCII letters, digits and underscores")
        if not isinstance(text, str) or not text.strip():
            raise fail(key, f"must be a non-empty string, not {text!r}")
        _check_placeholders(text, fail, key)
        texts[prompt_id] = text
    return Catalog(language=language, voice=voice.strip(), texts=texts, path=path)


def _check_placeholders(text: str, fail: Callable[[str, str], ConfigError], key: str) -> None:
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise fail(key, f"bad braces ({exc}); write {{{{ and }}}} for literal braces") from None
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS))
            raise fail(key, f"unknown placeholder {{{name}}} (known: {known})")
        if spec or conversion:
            raise fail(key, f"placeholder {{{name}}} takes no format spec or conversion")


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
    from pydub.silence import detect_leading_silence  # noqa: PLC0415

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
    _atomic_write(out_dir / f"{name}.wav", wav_buf.getvalue())
    _atomic_write(out_dir / f"{name}.ulaw", audioop.lin2ulaw(seg.raw_data, SAMPLE_WIDTH))
    return round(seg.frame_count() / SAMPLE_RATE, 3)


def _atomic_write(path: Path, data: bytes) -> None:
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


# --- build ----------------------------------------------------------------------------


def find_recording(recordings_dir: Path, language: str, prompt_id: str) -> Path | None:
    """The studio recording of ``prompt_id``, if an administrator dropped one."""
    folder = recordings_dir / language
    if not folder.is_dir():
        return None
    found = sorted(
        p for p in folder.glob(f"{prompt_id}.*") if p.is_file() and p.stem == prompt_id
    )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"{folder}: more than one recording of {prompt_id}: {names}")
    return found[0] if found else None


def _settings() -> str:
    return (
        f"v{PIPELINE_VERSION} {SAMPLE_RATE}Hz rms{TARGET_RMS_DBFS} peak{PEAK_CEILING_DBFS} "
        f"trim{TRIM_BELOW_PEAK_DB}/{TRIM_KEEP_MS}"
    )


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class _Job:
    language: str
    prompt_id: str
    out_dir: Path
    input_hash: str
    entry: dict[str, Any]
    text: str | None
    voice: str
    recording: Path | None


def _run_job(job: _Job) -> dict[str, Any]:
    if job.recording is not None:
        seg = process_audio(job.recording, name=f"{job.language}/{job.prompt_id}")
    else:
        assert job.text is not None
        seg = synthesise(job.text, job.voice)
    duration = write_audio(seg, job.out_dir, job.prompt_id)
    return {**job.entry, "duration": duration}


def read_manifest(lang_dir: Path) -> dict[str, Any]:
    path = lang_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PromptError(f"{path}: unreadable manifest: {exc}", file=str(path)) from exc
    return data if isinstance(data, dict) else {}


def build_prompts(
    source_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    languages: Sequence[str],
    *,
    company: str = DEFAULT_COMPANY,
    recordings_dir: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> list[LanguageBuild]:
    """Build the prompt sets of ``languages`` into ``<out_dir>/<lang>/``.

    ``recordings_dir`` defaults to ``<source_dir>/recordings``. ``jobs`` threads (default:
    the number of CPU cores) run espeak-ng and ffmpeg in parallel. Prompts whose input is
    unchanged are skipped unless ``force``; prompts no longer in the source are removed.
    """
    source = Path(source_dir)
    out = Path(out_dir)
    recordings = Path(recordings_dir) if recordings_dir is not None else source / RECORDINGS_DIR
    catalogs = [load_catalog(source, lang) for lang in languages]  # fail before any work
    settings = _settings()
    results: list[LanguageBuild] = []
    workers = max(1, jobs or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for catalog in catalogs:
            results.append(
                _build_language(catalog, out, recordings, company, settings, force, pool)
            )
            if progress is not None:
                progress(results[-1].summary())
    return results


def _build_language(
    catalog: Catalog,
    out: Path,
    recordings: Path,
    company: str,
    settings: str,
    force: bool,
    pool: ThreadPoolExecutor,
) -> LanguageBuild:
    lang_dir = out / catalog.language
    lang_dir.mkdir(parents=True, exist_ok=True)
    old = read_manifest(lang_dir).get("prompts", {})
    result = LanguageBuild(catalog.language)
    entries: dict[str, dict[str, Any]] = {}
    pending: list[_Job] = []
    for prompt_id in catalog.ids:
        recording = find_recording(recordings, catalog.language, prompt_id)
        if recording is not None:
            input_hash = _hash("recording", recording.read_bytes(), settings)
            entry: dict[str, Any] = {
                "source": "recording",
                "recording": str(recording),
                "company": company,
            }
            text = None
            result.recordings += 1
        else:
            text = catalog.text(prompt_id, company)
            input_hash = _hash("tts", catalog.voice, text, espeak_version(), settings)
            entry = {"source": "tts", "voice": catalog.voice, "text": text, "company": company}
        entry["input_hash"] = input_hash
        previous = old.get(prompt_id)
        if (
            not force
            and isinstance(previous, dict)
            and previous.get("input_hash") == input_hash
            and (lang_dir / f"{prompt_id}.wav").is_file()
            and (lang_dir / f"{prompt_id}.ulaw").is_file()
        ):
            entries[prompt_id] = previous
            result.unchanged.append(prompt_id)
            continue
        pending.append(
            _Job(catalog.language, prompt_id, lang_dir, input_hash, entry, text,
                 catalog.voice, recording)
        )
    futures = {job.prompt_id: pool.submit(_run_job, job) for job in pending}
    failure: BaseException | None = None
    for prompt_id, future in futures.items():
        try:
            entries[prompt_id] = future.result()
            result.built.append(prompt_id)
        except Exception as exc:  # keep the others: the manifest records what was built
            failure = failure or exc
    for prompt_id in old:
        if prompt_id not in catalog.texts:
            for ext in ("wav", "ulaw"):
                (lang_dir / f"{prompt_id}.{ext}").unlink(missing_ok=True)
            result.removed.append(prompt_id)
    ordered = {pid: entries[pid] for pid in catalog.ids if pid in entries}
    result.seconds = sum(float(e.get("duration", 0.0)) for e in ordered.values())
    manifest = {
        "language": catalog.language,
        "voice": catalog.voice,
        "company": company,
        "format": {"rate": SAMPLE_RATE, "channels": CHANNELS, "sample_width": SAMPLE_WIDTH,
                   "files": ["wav", "ulaw"]},
        "loudness": {"target_rms_dbfs": TARGET_RMS_DBFS, "peak_ceiling_dbfs": PEAK_CEILING_DBFS},
        "prompts": ordered,
    }
    _atomic_write(
        lang_dir / MANIFEST,
        (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"),
    )
    if failure is not None:
        raise failure
    return result


# --- check and install ----------------------------------------------------------------


def check_prompt_files(lang_dir: Path, prompt_id: str) -> str | None:
    """What is wrong with a built prompt, or None if it is playable."""
    wav_path = lang_dir / f"{prompt_id}.wav"
    ulaw_path = lang_dir / f"{prompt_id}.ulaw"
    if not wav_path.is_file():
        return f"{wav_path}: missing"
    try:
        with wave.open(str(wav_path), "rb") as w:
            rate, channels, width, frames = (
                w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            )
    except (wave.Error, EOFError, OSError) as exc:
        return f"{wav_path}: not a PCM wav file ({exc})"
    if (rate, channels, width) != (SAMPLE_RATE, CHANNELS, SAMPLE_WIDTH):
        return (
            f"{wav_path}: wrong format {rate} Hz, {channels} channel(s), {8 * width}-bit "
            f"(want {SAMPLE_RATE} Hz mono 16-bit)"
        )
    if frames == 0:
        return f"{wav_path}: empty"
    if not ulaw_path.is_file():
        return f"{ulaw_path}: missing"
    size = ulaw_path.stat().st_size
    if size == 0:
        return f"{ulaw_path}: empty"
    if size != frames:
        return f"{ulaw_path}: {size} samples but the wav has {frames}; rebuild"
    return None


def check_prompts(
    build_dir: str | os.PathLike[str],
    languages: Sequence[str],
    source_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Every problem with the built sets of ``languages``; an empty list means all good.

    The expected ids of a language come from its source catalog when ``source_dir`` has
    one, else from its build manifest. With sources, an id present in one language's
    source and missing from another's is a problem too.
    """
    build = Path(build_dir)
    problems: list[str] = []
    expected: dict[str, list[str]] = {}
    for lang in languages:
        lang_dir = build / lang
        if source_dir is not None and catalog_path(source_dir, lang).is_file():
            ids = load_catalog(source_dir, lang).ids
        else:
            ids = list(read_manifest(lang_dir).get("prompts", {}))
            if not ids:
                problems.append(f"{lang}: no source catalog and no built prompt set in {lang_dir}")
                continue
        expected[lang] = ids
        for prompt_id in ids:
            problem = check_prompt_files(lang_dir, prompt_id)
            if problem is not None:
                problems.append(f"{lang}/{prompt_id}: {problem}")
    all_ids = {pid for ids in expected.values() for pid in ids}
    for lang, ids in expected.items():
        for prompt_id in sorted(all_ids - set(ids)):
            others = ", ".join(o for o in expected if prompt_id in expected[o])
            problems.append(f"{lang}/{prompt_id}: missing from the {lang} source (in {others})")
    return problems


def built_languages(build_dir: str | os.PathLike[str]) -> list[str]:
    return sorted(p.parent.name for p in Path(build_dir).glob(f"*/{MANIFEST}"))


def install_prompts(
    build_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    languages: Sequence[str] | None = None,
) -> int:
    """Copy the built sets to ``<dest>/<lang>/``; return the number of prompts installed.

    With ``dest`` an Asterisk sound directory such as ``/usr/share/asterisk/sounds/ivr``,
    Asterisk plays ``ivr/<lang>/<id>``. Refuses (installing nothing) if any built prompt
    is missing or malformed. Prompts the previous install listed and the new set lacks
    are removed.
    """
    build = Path(build_dir)
    langs = list(languages) if languages else built_languages(build)
    if not langs:
        raise PromptError(f"{build}: no built prompt sets; run `ivr prompts build` first")
    problems = check_prompts(build, langs)
    if problems:
        raise PromptError(
            "not installing, the built prompts have problems:\n  " + "\n  ".join(problems),
            problems=problems,
        )
    count = 0
    for lang in langs:
        src = build / lang
        target = Path(dest) / lang
        target.mkdir(parents=True, exist_ok=True)
        ids = list(read_manifest(src).get("prompts", {}))
        for stale in set(read_manifest(target).get("prompts", {})) - set(ids):
            for ext in ("wav", "ulaw"):
                (target / f"{stale}.{ext}").unlink(missing_ok=True)
        for prompt_id in ids:
            for ext in ("wav", "ulaw"):
                shutil.copy2(src / f"{prompt_id}.{ext}", target / f"{prompt_id}.{ext}")
        shutil.copy2(src / MANIFEST, target / MANIFEST)
        count += len(ids)
    return count


# --- lookups for the controller -------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _durations(manifest: Path, mtime_ns: int) -> dict[str, float]:
    prompts = read_manifest(manifest.parent).get("prompts", {})
    return {pid: float(e["duration"]) for pid, e in prompts.items() if "duration" in e}


def prompt_duration(build_dir: str | os.PathLike[str], lang: str, prompt_id: str) -> float:
    """Duration in seconds of a built prompt, from the manifest (cached until it changes)."""
    manifest = Path(build_dir) / lang / MANIFEST
    try:
        mtime = manifest.stat().st_mtime_ns
    except FileNotFoundError:
        raise PromptError(
            f"{manifest}: no prompt set built for {lang}; run `ivr prompts build`", lang=lang
        ) from None
    try:
        return _durations(manifest, mtime)[prompt_id]
    except KeyError:
        raise PromptError(
            f"{manifest}: prompt {prompt_id!r} is not built for {lang}",
            lang=lang,
            prompt_id=prompt_id,
        ) from None


def digits_prompts(s: str) -> list[str]:
    """The digit prompt ids speaking the digits of ``s`` (anything else is skipped)."""
    return [f"digit_{c}" for c in s if c in "0123456789"]


def agent_number_prompts(number: str) -> list[str]:
    """``agent_intro``, one digit prompt per digit, ``agent_service`` ("1001" -> 6 ids)."""
    if not number or not all(c in "0123456789" for c in number):
        raise ConfigError(f"agent number {number!r} must be digits only", agent_number=number)
    return ["agent_intro", *digits_prompts(number), "agent_service"]


# --- test audio -----------------------------------------------------------------------


def _pink_noise(seconds: float, rms_dbfs: float, seed: int = 1) -> Any:
    """Seeded pink noise (Paul Kellet's filter) at ``rms_dbfs``, 8 kHz mono 16-bit."""
    rng = random.Random(seed)
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
    * ``silence``: 10 s of digital silence.

    Returns name -> duration in seconds (also written to ``manifest.json``).
    """
    out = Path(out_dir)
    segment_cls = _audio_segment()
    speech = _normalise(
        _trim(_to_telephony_tts(TEST_SPEECH_TEXT, TEST_SPEECH_VOICE)), TEST_SPEECH_RMS_DBFS
    )
    silence_1s = segment_cls.silent(duration=1000, frame_rate=SAMPLE_RATE)
    audio = {
        "caller_speech": silence_1s + speech,
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
    }
    _atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return durations


def _to_telephony_tts(text: str, voice: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="ivr-tts-") as tmp:
        wav = Path(tmp) / "tts.wav"
        _espeak(text, voice, wav)
        return _to_telephony(wav)

