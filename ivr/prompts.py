"""Prompt sets: the build into what Asterisk plays, checks and lookups.

A language's prompts are written in ``<source>/<lang>.toml`` (read by the pure
:mod:`ivr.catalog`: ``language``, ``espeak_voice`` and a ``[prompts]`` table of id -> text,
where ``{company}`` is the configured company name). :func:`build_prompts` turns each id into two files Asterisk
plays natively:

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
import json
import os
import shutil
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.audio import (
    CHANNELS,
    MANIFEST,
    PEAK_CEILING_DBFS,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    TARGET_RMS_DBFS,
    TRIM_BELOW_PEAK_DB,
    TRIM_KEEP_MS,
    atomic_write,
    espeak_version,
    make_test_audio,
    process_audio,
    synthesise,
    write_audio,
)
from ivr.catalog import (  # the pure catalog, re-exported for the build's callers
    PLACEHOLDERS,
    Catalog,
    PromptError,
    agent_number_prompts,
    catalog_path,
    digits_prompts,
    load_catalog,
    source_languages,
)
from ivr.errors import ConfigError
from ivr.sections import SwitchConfig

__all__ = ["PLACEHOLDERS", "Catalog", "PromptError", "agent_number_prompts", "catalog_path",
           "digits_prompts", "load_catalog", "make_test_audio", "source_languages"]

# Bump when the processing changes, so that every prompt is rebuilt.
PIPELINE_VERSION = 1
DEFAULT_COMPANY = SwitchConfig().company  # the defaults live in ivr.sections
RECORDINGS_DIR = "recordings"

Progress = Callable[[str], None]


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
        except Exception as exc:  # noqa: BLE001 - keep the others: the manifest records what was built
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
    atomic_write(
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


