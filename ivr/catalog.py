"""Prompt catalogs (pure): the source texts of a language's prompt set in
``<source>/<lang>.toml`` (``language``, ``espeak_voice`` and a ``[prompts]`` table of
id -> text, ``{company}`` the one placeholder), and the prompt ids that speak a number.
:mod:`ivr.prompts` builds the sound files from them."""

from __future__ import annotations

import os
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ivr.errors import ConfigError, IvrError

PLACEHOLDERS = frozenset({"company"})


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


def digits_prompts(s: str) -> list[str]:
    """The digit prompt ids speaking the digits of ``s`` (anything else is skipped)."""
    return [f"digit_{c}" for c in s if c in "0123456789"]


def agent_number_prompts(number: str) -> list[str]:
    """``agent_intro``, one digit prompt per digit, ``agent_service`` ("1001" -> 6 ids)."""
    if not number or not all(c in "0123456789" for c in number):
        raise ConfigError(f"agent number {number!r} must be digits only", agent_number=number)
    return ["agent_intro", *digits_prompts(number), "agent_service"]
