"""ivr install: put the project's dialplan and AMI user onto an existing Asterisk.

What it writes, and nothing else:

* a copy of every shipped ``ivr-*.conf`` dialplan file (not the demo's), with ``IVR_AGI``
  set to the controller's FastAGI address ([agi] of the controller's configuration);
* ``ivr-manager.conf``: the least-privilege AMI user ``[ivr]`` as the shipped
  ``manager.conf`` defines it, and ``ivr-features.conf``: the in-call keys of the shipped
  ``features.conf`` ``[applicationmap]``;
* the generated secrets (:data:`GENERATED_SECRETS`), each in its own mode-0600 file, kept
  across runs; the AMI secret also in the controller's secret file (default
  ``/etc/ivr/ami.secret``, mode 0600, which ``deploy/ivr.service`` hands to ``ivr run``);
* one marked block (``; BEGIN ivr (managed by ivr install)`` ... ``; END ivr``) of
  ``#include`` lines in each of three files: on plain Asterisk ``extensions.conf``,
  ``manager.conf`` and ``features.conf``; on FreePBX (detected) only the files FreePBX
  leaves to the administrator, ``extensions_custom.conf``, ``manager_custom.conf`` and
  ``features_applicationmap_custom.conf``, so that Apply Config cannot undo it.

Every file it changes is first copied to ``<file>.ivr-backup-<UTC time>``. A second run
changes nothing. ``--uninstall`` removes the blocks and the files it created (listed in
``.ivr-install.json``), nothing else. Changes are applied with ``manager reload``,
``dialplan reload`` and ``module reload features`` on Asterisk's CLI (the controller's AMI
user may not reload, by design), never a restart; then ``ivr doctor`` runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import os
import re
import secrets
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr import resources
from ivr.errors import IvrError
from ivr.sections import AgiConfig, Config

BEGIN = "; BEGIN ivr (managed by ivr install)"
END = "; END ivr"
MANIFEST = ".ivr-install.json"
NOT_INSTALLED = frozenset({"ivr-demo.conf"})  # the embedded demo's callers and agents
MANAGER_FILE = "ivr-manager.conf"
FEATURES_FILE = "ivr-features.conf"
GLOBALS_FILE = "ivr-globals.conf"
RELOAD_COMMANDS = ("manager reload", "dialplan reload", "module reload features")
HEADER = "; {name} -- written by `ivr install`; `ivr install --uninstall` removes it.\n"

# Which file of each layout gets the marked block, by role.
LAYOUTS = {
    "asterisk": {"extensions": "extensions.conf", "manager": "manager.conf", "features": "features.conf"},
    "freepbx": {"extensions": "extensions_custom.conf", "manager": "manager_custom.conf",
                "features": "features_applicationmap_custom.conf"},
}


class InstallError(IvrError):
    """The installer cannot go on (what to do is in the message)."""

    error_id = "install-error"


@dataclass(frozen=True)
class GeneratedSecret:
    """A secret the installer generates once and keeps, in a mode-0600 include file."""

    file: str  # in the Asterisk configuration directory
    role: str  # whose marked block includes it: "extensions" or "manager"; "globals": none,
    # ivr-globals.conf includes it itself
    category: str  # the section it adds to
    key: str
    controller_file: Callable[[InstallOptions], Path] | None = None  # where the controller reads it


# Every generated secret. The AMI user's is in the [ivr] section ivr-manager.conf opens;
# the FastAGI key every AGI() passes is a global, pulled in by ivr-globals.conf's own
# #tryinclude (the controller reads the same file: systemd credential agi-key, or
# [agi] key_file).
AGI_KEY_FILE = "ivr-agi-key.conf"  # the FastAGI key, a global ivr-globals.conf #tryinclude's
GENERATED_SECRETS = (
    GeneratedSecret(file="ivr-manager-secret.conf", role="manager", category="ivr", key="secret",
                    controller_file=lambda o: o.controller_secret_file),
    GeneratedSecret(file=AGI_KEY_FILE, role="globals", category="globals", key="IVR_AGI_KEY"),
)


def read_agi_key(path: Path) -> str:
    """The key of an ``ivr-agi-key.conf`` the installer wrote ("" when there is none)."""
    m = re.search(r"(?m)^\s*IVR_AGI_KEY\s*=\s*(\S+)\s*$", _read(path) or "")
    return m.group(1) if m else ""


@dataclass(frozen=True)
class InstallOptions:
    asterisk_dir: Path = Path("/etc/asterisk")
    layout: str = "auto"  # "auto", "asterisk" or "freepbx"
    agi_url: str = "agi://127.0.0.1:4573"  # IVR_AGI: the controller's FastAGI address
    controller_secret_file: Path = Path("/etc/ivr/ami.secret")
    source_dir: Path = field(default_factory=resources.asterisk_config_dir)


@dataclass
class Change:
    path: Path
    old: str | None  # None: the file does not exist
    new: str | None  # None: the file is removed
    mode: int = 0o640
    secret: bool = False
    reference: Path | None = None  # new files take this file's owner
    backup: bool = True  # copy the old content aside before changing it

    def diff(self) -> str:
        def lines(text: str | None) -> list[str]:
            if text is None:
                return []
            out = text.splitlines(keepends=True)
            if self.secret:  # never print a secret: key = ******** (a bare secret: ********)
                out = [line if line.startswith((";", "[")) else
                       re.sub(r"^(\s*\w+\s*=\s*)?\S.*$", lambda m: (m.group(1) or "") + "********", line)
                       for line in out]
            return out

        return "".join(difflib.unified_diff(
            lines(self.old), lines(self.new),
            fromfile=str(self.path) if self.old is not None else "/dev/null",
            tofile=str(self.path) if self.new is not None else "/dev/null"))


def detect_layout(asterisk_dir: Path) -> str:
    """"freepbx" if the directory looks like FreePBX's, else "asterisk"."""
    if (asterisk_dir / "extensions_custom.conf").exists() or (asterisk_dir.parent / "freepbx.conf").exists():
        return "freepbx"
    for name in ("extensions.conf", "manager.conf", "extensions_additional.conf"):
        try:
            text = (asterisk_dir / name).read_text(errors="replace").lower()
        except OSError:
            continue
        if "freepbx" in text or "freepbx_module_admin" in text:
            return "freepbx"
    return "asterisk"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _section(text: str, name: str) -> list[str]:
    """The non-comment lines of ``[name]`` in an Asterisk configuration text."""
    out: list[str] = []
    inside = False
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if m := re.match(r"^\[([^\]]+)\]", line):
            inside = m.group(1) == name
        elif inside and line and not line.startswith("#"):
            out.append(line)
    if not out:
        raise InstallError(f"the shipped configuration has no [{name}] section")
    return out


def _has_section(text: str | None, name: str) -> bool:
    return bool(text) and re.search(rf"(?m)^\s*\[{re.escape(name)}\]", text or "") is not None


def strip_block(text: str) -> str:
    """``text`` without the installer's marked block (and the blank line before it)."""
    return re.sub(rf"\n?{re.escape(BEGIN)}\n.*?^{re.escape(END)}\n?", "", text, flags=re.DOTALL | re.MULTILINE)


def with_block(text: str | None, lines: list[str]) -> str:
    base = strip_block(text or "")
    block = "\n".join([BEGIN, *lines, END]) + "\n"
    if not base.strip():
        return block
    return base + ("\n" if base.endswith("\n") else "\n\n") + block  # strip_block() undoes it


class Installer:
    def __init__(self, options: InstallOptions) -> None:
        self.o = options
        self.dir = options.asterisk_dir
        if not self.dir.is_dir():
            raise InstallError(f"{self.dir} is not a directory (--asterisk-dir: Asterisk's configuration)")
        self.layout = detect_layout(self.dir) if options.layout == "auto" else options.layout
        if self.layout not in LAYOUTS:
            raise InstallError(f"unknown layout {self.layout!r} (asterisk or freepbx)")
        self.targets = {role: self.dir / name for role, name in LAYOUTS[self.layout].items()}

    # ------------------------------------------------------------------ plan
    def dialplan_files(self) -> list[Path]:
        files = sorted(p for p in self.o.source_dir.glob("ivr-*.conf") if p.name not in NOT_INSTALLED)
        files.sort(key=lambda p: p.name != GLOBALS_FILE)  # globals first
        return files

    def _secret_value(self, spec: GeneratedSecret) -> str:
        pattern = rf"(?m)^\s*{re.escape(spec.key)}\s*=\s*(\S+)\s*$"
        if (text := _read(self.dir / spec.file)) and (m := re.search(pattern, text)):
            return m.group(1)
        if spec.controller_file and (text := _read(Path(spec.controller_file(self.o)))) and text.strip():
            return text.strip()
        return secrets.token_urlsafe(32)

    def plan(self) -> list[Change]:
        """Every file the installation would write, with its new content (unchanged ones too)."""
        changes: list[Change] = []
        ext_target = self.targets["extensions"]
        created: list[str] = []

        def own(name: str, text: str, reference: Path, *, secret: bool = False) -> None:
            changes.append(Change(self.dir / name, _read(self.dir / name), HEADER.format(name=name) + text,
                                  mode=0o600 if secret else 0o640, secret=secret, reference=reference))
            created.append(name)

        ext_includes: list[str] = []
        for src in self.dialplan_files():
            text = src.read_text()
            if src.name == GLOBALS_FILE:
                text, n = re.subn(r"(?m)^IVR_AGI\s*=.*$", f"IVR_AGI = {self.o.agi_url}", text, count=1)
                if n != 1:
                    raise InstallError(f"{src}: no IVR_AGI line to set")
            changes.append(Change(self.dir / src.name, _read(self.dir / src.name), text, reference=ext_target))
            created.append(src.name)
            ext_includes.append(f"#include {src.name}")
            if src.name == GLOBALS_FILE:
                for spec in GENERATED_SECRETS:
                    if spec.role == "extensions":
                        ext_includes.append(f"#include {spec.file}")

        shipped = self.o.source_dir
        manager = _section((shipped / "manager.conf").read_text(), "ivr")
        own(MANAGER_FILE, "[ivr]\n" + "\n".join(manager) + "\n", self.targets["manager"])
        man_includes = [f"#include {MANAGER_FILE}"]
        for spec in GENERATED_SECRETS:
            if spec.role == "manager":
                man_includes.append(f"#include {spec.file}")

        for spec in GENERATED_SECRETS:
            value = self._secret_value(spec)
            # Always an addition: ivr-manager.conf opens [ivr], ivr-globals.conf [globals].
            own(spec.file, f"[{spec.category}](+)\n{spec.key} = {value}\n",
                self.targets["extensions" if spec.role == "globals" else spec.role], secret=True)
            if spec.controller_file:
                path = Path(spec.controller_file(self.o))
                changes.append(Change(path, _read(path), value + "\n", mode=0o600, secret=True))
                created.append(str(path))

        appmap = _section((shipped / "features.conf").read_text(), "applicationmap")
        own(FEATURES_FILE, "\n".join(appmap) + "\n", self.targets["features"])
        feat_lines = [f"#include {FEATURES_FILE}"]
        if self.layout == "asterisk":  # FreePBX includes its custom file inside [applicationmap]
            feat_target = strip_block(_read(self.targets["features"]) or "")
            head = "[applicationmap](+)" if _has_section(feat_target, "applicationmap") else "[applicationmap]"
            feat_lines.insert(0, head)

        for role, lines in (("extensions", ext_includes), ("manager", man_includes), ("features", feat_lines)):
            target = self.targets[role]
            old = _read(target)
            self._refuse_manual_setup(target, old)
            changes.append(Change(target, old, with_block(old, lines), reference=self.dir))
            if old is None:
                created.append(target.name)

        manifest = self.dir / MANIFEST
        previous = self._manifest().get("created", [])
        target_names = {t.name for t in self.targets.values()}
        for name in sorted(set(previous) - set(created) - target_names):  # no longer shipped
            path = Path(name) if os.path.isabs(name) else self.dir / name
            if (old := _read(path)) is not None:
                changes.append(Change(path, old, None))
        # A file the installer created before stays its own (e.g. extensions_custom.conf).
        keep = sorted(set(created) | {n for n in previous if n in target_names})
        changes.append(Change(manifest, _read(manifest),
                              json.dumps({"layout": self.layout, "created": keep}, indent=1) + "\n",
                              mode=0o644, reference=self.dir))
        return changes

    def _refuse_manual_setup(self, target: Path, text: str | None) -> None:
        """An ivr-*.conf already included by hand (the README's manual steps): stop."""
        for number, line in enumerate(strip_block(text or "").splitlines(), 1):
            if re.match(r"^\s*#(try)?include\s+\"?ivr-", line):
                raise InstallError(
                    f"{target}:{number}: `{line.strip()}` is outside the installer's block (a manual "
                    "set-up?): remove those lines, then run `ivr install` again")

    def _manifest(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.dir / MANIFEST).read_text()))
        except (OSError, ValueError):
            return {}

    def uninstall_plan(self) -> list[Change]:
        manifest = self._manifest()
        created = set(manifest.get("created", []))
        changes: list[Change] = []
        for target in self.targets.values():
            old = _read(target)
            if old is None or BEGIN not in old:
                continue
            new: str | None = strip_block(old)
            if target.name in created and not (new or "").strip():
                new = None
            changes.append(Change(target, old, new))
        secret_files = {spec.file for spec in GENERATED_SECRETS}
        for name in sorted(created - {t.name for t in self.targets.values()}):
            path = Path(name) if os.path.isabs(name) else self.dir / name
            if (old := _read(path)) is not None:
                is_secret = name in secret_files or os.path.isabs(name)
                changes.append(Change(path, old, None, secret=is_secret, backup=False))
        if (self.dir / MANIFEST).exists():
            changes.append(Change(self.dir / MANIFEST, _read(self.dir / MANIFEST), None, backup=False))
        return changes

    # ------------------------------------------------------------------ apply
    def apply(self, changes: list[Change], stamp: str) -> list[Change]:
        """Write what differs (backing up changed files first); return what was written."""
        done = []
        for ch in changes:
            if ch.old == ch.new:
                continue
            if ch.old is not None and ch.backup and not ch.secret and ch.path.name != MANIFEST:
                backup = ch.path.with_name(f"{ch.path.name}.ivr-backup-{stamp}")
                _write(backup, ch.old, ch.path.stat().st_mode & 0o777, ch.path)
            if ch.new is None:
                ch.path.unlink()
            else:
                ch.path.parent.mkdir(parents=True, exist_ok=True)
                exists = ch.path.exists()
                mode = ch.path.stat().st_mode & 0o777 if exists and not ch.secret else ch.mode
                _write(ch.path, ch.new, mode, ch.path if exists else ch.reference)
            done.append(ch)
        return done


def _write(path: Path, text: str, mode: int, owner_of: Path | None) -> None:
    """Write atomically with ``mode``, owned like ``owner_of`` (when running as root)."""
    tmp = path.with_name(f".{path.name}.ivr-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    if owner_of is not None and os.geteuid() == 0 and owner_of.exists():
        st = owner_of.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)


def reload_asterisk(cli: str, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[str]:
    """Apply the configuration with reloads on Asterisk's CLI (never a restart)."""
    done = []
    for command in RELOAD_COMMANDS:
        argv = [*shlex.split(cli), "-rx", command]
        try:
            out = run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"`{shlex.join(argv)}` failed ({exc}); the files are written: reload by hand") from exc
        if out.returncode != 0 or "No such command" in out.stdout:
            raise InstallError(f"`{shlex.join(argv)}` failed: {(out.stderr or out.stdout).strip()}; "
                               "the files are written: reload by hand")
        done.append(command)
    return done


def agi_url(config: Config | None) -> str:
    agi = config.agi if config is not None else AgiConfig()
    host, port = agi.host, agi.port
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - a wildcard is recognised here, not bound
        host = "127.0.0.1"
    return f"agi://{host}:{port}"


def options_for(asterisk_dir: Path, config: Config | None, **kwargs: object) -> InstallOptions:
    return dataclasses.replace(InstallOptions(asterisk_dir=asterisk_dir, agi_url=agi_url(config)),
                               **kwargs)  # type: ignore[arg-type]  # replace() checks the field names at run time


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
