"""Prompt catalogs and builds, with the real espeak-ng, ffmpeg and pydub (no mocks)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tomllib
import wave
from array import array
from pathlib import Path

import pytest

from ivr import prompts
from ivr.cli import main
from ivr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "prompts"

TINY = {
    "en-US": ("en-us", {"hello": "Hello!", "welcome": "{company} welcomes your call.",
                        "digit_1": "one"}),
    "zh-CN": ("cmn-latn-pinyin", {"hello": "您好!", "welcome": "{company}欢迎您的来电。",
                                  "digit_1": "幺"}),
}


def write_catalog(source: Path, lang: str, voice: str, texts: dict[str, str]) -> None:
    source.mkdir(parents=True, exist_ok=True)
    lines = [f'language = "{lang}"', f'espeak_voice = "{voice}"', "", "[prompts]"]
    lines += [f"{pid} = {json.dumps(text, ensure_ascii=False)}" for pid, text in texts.items()]
    (source / f"{lang}.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_source(root: Path, langs: tuple[str, ...] = ("en-US",)) -> Path:
    source = root / "src"
    for lang in langs:
        voice, texts = TINY[lang]
        write_catalog(source, lang, voice, texts)
    return source


def wav_info(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


def wav_peak(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        samples = array("h", w.readframes(w.getnframes()))
    return max(abs(s) for s in samples)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("built")
    source = tiny_source(root, ("en-US", "zh-CN"))
    out = root / "out"
    prompts.build_prompts(source, out, ["en-US", "zh-CN"], company="Acme")
    return source, out


# --- build -------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en-US", "zh-CN"])
def test_built_prompts_are_8khz_mono_16bit_wav_and_ulaw(
    built: tuple[Path, Path], lang: str
) -> None:
    _source, out = built
    manifest = json.loads((out / lang / "manifest.json").read_text(encoding="utf-8"))
    assert list(manifest["prompts"]) == ["hello", "welcome", "digit_1"]
    for prompt_id, entry in manifest["prompts"].items():
        rate, channels, width, frames = wav_info(out / lang / f"{prompt_id}.wav")
        assert (rate, channels, width) == (8000, 1, 2)
        assert frames > 0.1 * 8000
        assert (out / lang / f"{prompt_id}.ulaw").stat().st_size == frames
        assert entry["duration"] == pytest.approx(frames / 8000, abs=0.002)
        assert entry["source"] == "tts"
        assert entry["company"] == "Acme"
        assert len(entry["input_hash"]) == 16
        # Normalised: peak limited to -1 dBFS, and not a whisper either.
        assert 0.5 * 32768 < wav_peak(out / lang / f"{prompt_id}.wav") <= 0.9 * 32768
    assert "Acme" in manifest["prompts"]["welcome"]["text"]
    assert prompts.check_prompts(out, [lang]) == []


def test_trimmed_silence(built: tuple[Path, Path]) -> None:
    _source, out = built
    with wave.open(str(out / "en-US" / "hello.wav"), "rb") as w:
        samples = array("h", w.readframes(w.getnframes()))
    edge = 8 * 40  # 40 ms: the 20 ms kept plus one detection chunk
    assert max(abs(s) for s in samples[: edge * 2]) > 300
    assert max(abs(s) for s in samples[-edge * 2 :]) > 300


def test_recording_overrides_tts_and_is_converted(tmp_path: Path) -> None:
    source = tiny_source(tmp_path)
    recordings = source / "recordings" / "en-US"
    recordings.mkdir(parents=True)
    # 0.5 s silence, 1 s of 440 Hz, 0.3 s silence; 44.1 kHz stereo mp3.
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "sine=frequency=440:duration=1:sample_rate=44100",
         "-af", "adelay=500|500,apad=pad_dur=0.3", "-ac", "2", str(recordings / "hello.mp3")],
        check=True,
    )
    out = tmp_path / "out"
    (result,) = prompts.build_prompts(source, out, ["en-US"])
    assert result.recordings == 1
    entry = json.loads((out / "en-US" / "manifest.json").read_text())["prompts"]["hello"]
    assert entry["source"] == "recording"
    rate, channels, width, frames = wav_info(out / "en-US" / "hello.wav")
    assert (rate, channels, width) == (8000, 1, 2)
    assert entry["duration"] == pytest.approx(1.04, abs=0.06)  # silence trimmed
    assert (out / "en-US" / "hello.ulaw").stat().st_size == frames
    # A pure tone has a crest factor of 3 dB: it reaches the -18 dBFS RMS target.
    peak = wav_peak(out / "en-US" / "hello.wav")
    assert peak == pytest.approx(32768 * 10 ** (-15 / 20), rel=0.1)

    # Replacing the recording rebuilds it; removing it goes back to espeak-ng.
    (recordings / "hello.mp3").unlink()
    (result,) = prompts.build_prompts(source, out, ["en-US"])
    assert result.built == ["hello"]
    entry = json.loads((out / "en-US" / "manifest.json").read_text())["prompts"]["hello"]
    assert entry["source"] == "tts"


def test_two_recordings_of_one_id_is_an_error(tmp_path: Path) -> None:
    source = tiny_source(tmp_path)
    folder = source / "recordings" / "en-US"
    folder.mkdir(parents=True)
    (folder / "hello.wav").write_bytes(b"")
    (folder / "hello.mp3").write_bytes(b"")
    with pytest.raises(ConfigError, match="more than one recording of hello"):
        prompts.build_prompts(source, tmp_path / "out", ["en-US"])


def test_incremental_rebuild_skips_unchanged(tmp_path: Path) -> None:
    source = tiny_source(tmp_path)
    out = tmp_path / "out"
    (first,) = prompts.build_prompts(source, out, ["en-US"], company="Acme")
    assert sorted(first.built) == ["digit_1", "hello", "welcome"]

    hello = out / "en-US" / "hello.wav"
    mtime = hello.stat().st_mtime_ns
    (again,) = prompts.build_prompts(source, out, ["en-US"], company="Acme")
    assert again.built == [] and sorted(again.unchanged) == ["digit_1", "hello", "welcome"]
    assert hello.stat().st_mtime_ns == mtime

    # Only the prompt that uses {company} depends on it.
    (renamed,) = prompts.build_prompts(source, out, ["en-US"], company="Globex")
    assert renamed.built == ["welcome"]

    # A changed text, a removed id, a deleted output file.
    write_catalog(
        source, "en-US", "en-us", {"hello": "Hi there!", "welcome": "{company} welcomes your call."}
    )
    (out / "en-US" / "welcome.ulaw").unlink()
    (changed,) = prompts.build_prompts(source, out, ["en-US"], company="Globex")
    assert sorted(changed.built) == ["hello", "welcome"]
    assert changed.removed == ["digit_1"]
    assert not (out / "en-US" / "digit_1.wav").exists()
    manifest = json.loads((out / "en-US" / "manifest.json").read_text())
    assert list(manifest["prompts"]) == ["hello", "welcome"]


# --- check and install ---------------------------------------------------------------------


def test_check_names_missing_empty_and_wrong_format(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    source, built_out = built
    out = tmp_path / "out"
    shutil.copytree(built_out, out)
    (out / "en-US" / "hello.wav").unlink()
    (out / "en-US" / "welcome.ulaw").write_bytes(b"")
    with wave.open(str(out / "zh-CN" / "digit_1.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0\0\0" * 100)
    problems = prompts.check_prompts(out, ["en-US", "zh-CN"], source)
    assert len(problems) == 3
    assert "en-US/hello" in problems[0] and "missing" in problems[0]
    assert "en-US/welcome" in problems[1] and "empty" in problems[1]
    assert "zh-CN/digit_1" in problems[2] and "16000 Hz, 2 channel(s)" in problems[2]

    code = main(["prompts", "check", "--source", str(source), "--out", str(out),
                 "--lang", "en-US", "--lang", "zh-CN"])
    assert code == 1
    assert main(["prompts", "check", "--source", str(source), "--out", str(built_out)]) == 0


def test_check_flags_ids_missing_from_another_language(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _source, out = built
    source = tmp_path / "src"
    write_catalog(source, "en-US", "en-us", {**TINY["en-US"][1], "hold_thanks": "Thanks."})
    write_catalog(source, "zh-CN", "cmn-latn-pinyin", TINY["zh-CN"][1])
    problems = prompts.check_prompts(out, ["en-US", "zh-CN"], source)
    assert "en-US/hold_thanks: " in problems[0] and "missing" in problems[0]
    assert problems[1] == "zh-CN/hold_thanks: missing from the zh-CN source (in en-US)"


def test_install_copies_for_asterisk(
    built: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _source, out = built
    dest = tmp_path / "sounds" / "ivr"
    assert main(["prompts", "install", "--out", str(out), "--dest", str(dest)]) == 0
    assert "installed 6 prompts" in capsys.readouterr().out
    for lang in ("en-US", "zh-CN"):
        assert sorted(p.name for p in (dest / lang).iterdir()) == sorted(
            [f"{pid}.{ext}" for pid in ("hello", "welcome", "digit_1") for ext in ("wav", "ulaw")]
            + ["manifest.json"]
        )


def test_install_refuses_a_broken_build(built: tuple[Path, Path], tmp_path: Path) -> None:
    _source, built_out = built
    out = tmp_path / "out"
    shutil.copytree(built_out, out)
    (out / "zh-CN" / "hello.ulaw").unlink()
    with pytest.raises(prompts.PromptError, match="zh-CN/hello"):
        prompts.install_prompts(out, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# --- catalogs ------------------------------------------------------------------------------


def test_catalog_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fr-FR\.toml: prompt catalog not found"):
        prompts.load_catalog(tmp_path, "fr-FR")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[prompts]\nhello = 3\n', r"en-US\.toml: prompts\.hello: must be a non-empty string"),
        ('[prompts]\nhello = ""\n', r"en-US\.toml: prompts\.hello: must be a non-empty string"),
        ('[prompts]\nwelcome = "{compnay} welcomes you"\n',
         r"en-US\.toml: prompts\.welcome: unknown placeholder \{compnay\}"),
        ('[prompts]\nwelcome = "{company welcomes you"\n', r"prompts\.welcome: bad braces"),
        ('[prompts]\n"bad id" = "x"\n', r'prompts\.bad id: an id must be'),
        ('[prompts]\n', r"en-US\.toml: prompts: must be a non-empty table"),
    ],
)
def test_catalog_errors_name_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "en-US.toml").write_text('espeak_voice = "en-us"\n' + body)
    with pytest.raises(ConfigError, match=message):
        prompts.load_catalog(tmp_path, "en-US")


def test_catalog_needs_a_voice(tmp_path: Path) -> None:
    (tmp_path / "en-US.toml").write_text('[prompts]\nhello = "Hello"\n')
    with pytest.raises(ConfigError, match=r"en-US\.toml: espeak_voice: must be"):
        prompts.load_catalog(tmp_path, "en-US")


def test_shipped_catalogs_have_the_same_ids() -> None:
    zh = prompts.load_catalog(SOURCE, "zh-CN")
    en = prompts.load_catalog(SOURCE, "en-US")
    assert zh.ids == en.ids
    for n in range(10):
        assert f"digit_{n}" in zh.ids
    assert zh.text("welcome", "Acme").startswith("Acme")


def test_zh_cn_voice_speaks_mandarin_not_english() -> None:
    # espeak-ng's "cmn" voice turns hanzi into pinyin with tone digits and then reads
    # those as English ("ni three"); "cmn-latn-pinyin" does not switch languages.
    catalog = prompts.load_catalog(SOURCE, "zh-CN")
    text = "\n".join(catalog.text(pid, "") for pid in catalog.ids)
    phonemes = subprocess.run(
        ["espeak-ng", "-q", "-x", "-b", "1", "-v", catalog.voice],
        input=text.encode(), capture_output=True, check=True,
    ).stdout.decode()
    assert "(en)" not in phonemes


# --- lookups -------------------------------------------------------------------------------


def test_agent_number_prompts() -> None:
    assert prompts.agent_number_prompts("1001") == [
        "agent_intro", "digit_1", "digit_0", "digit_0", "digit_1", "agent_service",
    ]
    with pytest.raises(ConfigError, match="'A7' must be digits"):
        prompts.agent_number_prompts("A7")
    with pytest.raises(ConfigError):
        prompts.agent_number_prompts("")


def test_digits_prompts_ignore_non_digits() -> None:
    assert prompts.digits_prompts("+86 (10) 5-9") == [
        "digit_8", "digit_6", "digit_1", "digit_0", "digit_5", "digit_9",
    ]
    assert prompts.digits_prompts("anonymous") == []


def test_prompt_duration(built: tuple[Path, Path]) -> None:
    _source, out = built
    frames = wav_info(out / "en-US" / "welcome.wav")[3]
    duration = prompts.prompt_duration(out, "en-US", "welcome")
    assert duration == pytest.approx(frames / 8000, abs=0.002)
    with pytest.raises(prompts.PromptError, match="'nope' is not built for en-US"):
        prompts.prompt_duration(out, "en-US", "nope")
    with pytest.raises(prompts.PromptError, match="no prompt set built for fr-FR"):
        prompts.prompt_duration(out, "fr-FR", "hello")


# --- test audio ----------------------------------------------------------------------------


def rms_dbfs(samples: array[int]) -> float:
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return 20 * math.log10(rms / 32768) if rms else -math.inf


def test_make_test_audio(tmp_path: Path) -> None:
    durations = prompts.make_test_audio(tmp_path)
    assert set(durations) == {"caller_speech", "line_noise", "silence", "caller_speech_faint", "line_noise_loud",
                              "caller_hello", "machine_greeting"}
    audio = {}
    for name in durations:
        rate, channels, width, frames = wav_info(tmp_path / f"{name}.wav")
        assert (rate, channels, width) == (8000, 1, 2)
        assert (tmp_path / f"{name}.ulaw").stat().st_size == frames
        with wave.open(str(tmp_path / f"{name}.wav"), "rb") as w:
            audio[name] = array("h", w.readframes(frames))

    speech = audio["caller_speech"]
    assert 2.0 < durations["caller_speech"] < 5.0
    assert max(abs(s) for s in speech[:8000]) == 0  # 1 s of silence first
    assert rms_dbfs(speech[8000:]) == pytest.approx(-20, abs=2)

    assert durations["line_noise"] == 10.0
    assert rms_dbfs(audio["line_noise"]) == pytest.approx(-45, abs=0.5)
    # Steady: every 100 ms window is within a few dB of the whole.
    windows = [rms_dbfs(audio["line_noise"][i : i + 800]) for i in range(0, 80000, 800)]
    assert all(-51 < w < -40 for w in windows)

    assert durations["silence"] == 10.0
    assert set(audio["silence"]) == {0}
    assert set((tmp_path / "silence.ulaw").read_bytes()) == {0xFF}

    faint = audio["caller_speech_faint"]
    assert durations["caller_speech_faint"] == durations["caller_speech"]
    assert rms_dbfs(faint[8000:]) == pytest.approx(-40, abs=2)
    assert durations["line_noise_loud"] == 20.0
    assert rms_dbfs(audio["line_noise_loud"]) == pytest.approx(-20, abs=0.5)
    # a call-back's person says a short "hello?"; its machine talks on for seconds, then beeps
    assert max(abs(s) for s in audio["caller_hello"][:8000]) == 0
    assert 0.2 < durations["caller_hello"] - 1.0 < 1.5
    assert rms_dbfs(audio["caller_hello"][8000:]) == pytest.approx(-20, abs=2)
    assert 5.0 < durations["machine_greeting"] < 15.0


def test_full_en_us_set_builds_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(SOURCE / "en-US.toml", source)
    out = tmp_path / "out"
    args = ["--source", str(source), "--out", str(out), "--company", "Acme"]
    assert main(["prompts", "build", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    n = len(tomllib.loads((SOURCE / "en-US.toml").read_text(encoding="utf-8"))["prompts"])
    assert lines[0].startswith(f"en-US: {n} prompts, {n} built, 0 unchanged")
    assert prompts.check_prompts(out, ["en-US"], source) == []
    assert prompts.prompt_duration(out, "en-US", "silent_prompt3") > 3.0
