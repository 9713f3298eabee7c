"""ivr prompts build|check|install|test-audio: the prompt sets Asterisk plays.

Catalogs: --source, else [prompts] source, else the ones shipped in the package. Built
prompts: --out, else [prompts] build, else $XDG_DATA_HOME/ivr/prompts, else
/var/lib/ivr/prompts as root, else ~/.local/share/ivr/prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ivr import prompts, resources
from ivr.config import Config, load_config

DEFAULT_SOURCE = "the catalogs shipped in the package"
DEFAULT_BUILD = "the data directory's prompts/ (see ivr prompts --help)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "prompts",
        help="build, check and install the prompt sets",
        description=__doc__,
    )
    sub = parser.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", help=f"source catalogs (default: config or {DEFAULT_SOURCE})")
        p.add_argument("--out", help=f"build directory (default: config or {DEFAULT_BUILD})")
        p.add_argument(
            "--lang",
            action="append",
            metavar="LANG",
            help="a language to handle, repeatable (default: config or every source catalog)",
        )
        p.add_argument("--config", metavar="F", help="the controller's configuration file")

    build = sub.add_parser(
        "build",
        help="speak or convert every prompt to 8 kHz wav and u-law (incremental)",
        description="Build <out>/<lang>/<id>.wav and .ulaw from the source texts (espeak-ng) "
        "or from recordings in <source>/recordings/<lang>/; unchanged prompts are skipped.",
    )
    common(build)
    build.add_argument("--company", help="company name for {company} (default: config or Example)")
    build.add_argument("--jobs", type=int, help="parallel jobs (default: CPU cores)")
    build.add_argument("--force", action="store_true", help="rebuild unchanged prompts too")
    build.set_defaults(func=cmd_build)

    check = sub.add_parser(
        "check",
        help="fail naming every missing, empty or wrong-format prompt",
        description="Exit 1 naming every prompt missing, empty or not 8 kHz mono 16-bit, "
        "and every id present in one language's source but not another's.",
    )
    common(check)
    check.set_defaults(func=cmd_check)

    install = sub.add_parser(
        "install",
        help="copy the built sets to DEST/<lang>/ (an Asterisk sound directory)",
        description="Copy <out>/<lang>/ to DEST/<lang>/. With DEST "
        "/usr/share/asterisk/sounds/ivr, Asterisk plays ivr/<lang>/<id>.",
    )
    common(install)
    install.add_argument("--dest", required=True, metavar="DIR")
    install.set_defaults(func=cmd_install)

    test_audio = sub.add_parser(
        "test-audio",
        help="write caller_speech, line_noise and silence for the integration tests",
    )
    test_audio.add_argument("--out", required=True, metavar="DIR")
    test_audio.set_defaults(func=cmd_test_audio)


def _config(path: str | None) -> Config | None:
    """The loaded configuration, or None without --config."""
    return None if path is None else load_config(path)


def _resolve(args: argparse.Namespace) -> tuple[Path, Path, list[str], Config | None]:
    config = _config(args.config)
    source = resources.prompts_source_dir(args.source or (config.prompts.source if config else None))
    out = resources.prompts_build_dir(args.out or (config.prompts.build if config else None))
    langs = args.lang or (list(config.switch.languages) if config else [])
    if not langs:
        langs = prompts.source_languages(source) or prompts.built_languages(out)
    return source, out, langs, config


def cmd_build(args: argparse.Namespace) -> int:
    source, out, langs, config = _resolve(args)
    if not langs:
        print(f"ivr prompts: no languages: no *.toml in {source}", file=sys.stderr)
        return 1
    company = args.company or (config.switch.company if config else prompts.DEFAULT_COMPANY)
    started = time.monotonic()
    results = prompts.build_prompts(
        source, out, langs, company=company, jobs=args.jobs, force=args.force,
        progress=lambda line: print(line, flush=True),
    )
    size = sum(p.stat().st_size for lang in langs for p in (out / lang).iterdir() if p.is_file())
    total = sum(r.total for r in results)
    print(
        f"{total} prompts in {len(results)} language(s) in {out}/ "
        f"({size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    source, out, langs, _ = _resolve(args)
    if not langs:
        print(f"ivr prompts: no languages to check in {source} or {out}", file=sys.stderr)
        return 1
    problems = prompts.check_prompts(out, langs, source)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s); run `ivr prompts build`", file=sys.stderr)
        return 1
    print(f"ok: {', '.join(langs)} complete in {out}/")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    _source, out, _langs, _ = _resolve(args)
    count = prompts.install_prompts(out, args.dest, args.lang)
    print(f"installed {count} prompts from {out}/ to {args.dest}/")
    return 0


def cmd_test_audio(args: argparse.Namespace) -> int:
    durations = prompts.make_test_audio(args.out)
    for name, seconds in durations.items():
        print(f"{args.out}/{name}.wav, .ulaw: {seconds:.2f} s")
    return 0
