"""The embedded Asterisk: a Debian sid root filesystem with the `asterisk` package,
started chrooted with the project's own configuration directory.

Layout (all under the user's cache dir, ``~/.cache/ivr`` by default)::

    rootfs/                         built once by mmdebstrap, shared by all instances
    rootfs/srv/ivr/<instance>/      one switch: etc/ (rendered config), lib/, spool/,
                                    log/, run/, secrets.json (mode 0600)

Bookworm has no asterisk package, sid has Asterisk 22; its index is a frozen snapshot
whose Release file has expired, hence ``Check-Valid-Until "false"``. The mirror is read
from this machine's own apt sources, never written into the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ivr import resources
from ivr.errors import SwitchError
from ivr.switch.amiwait import wait_fully_booted
from ivr.switch.host import Ports, find_moddir, require_root, rewrite_lines, wait_gone, write_private
from ivr.switch.rootfs import PACKAGES, default_cache_dir, read_debian_mirror

ADMIN_USER = "ivr-admin"
CONTROLLER_USER = "ivr"
AGENT_ENDPOINTS = ("1001", "1002", "1003")


@dataclass
class Secrets:
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    controller: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    agents: dict[str, str] = field(
        default_factory=lambda: {a: secrets.token_urlsafe(12) for a in AGENT_ENDPOINTS}
    )
    http_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # the API's bearer token
    agi_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # FastAGI: the switch proves itself


class EmbeddedSwitch:
    """One embedded Asterisk instance: build, up, down, status, cli."""

    def __init__(
        self,
        name: str = "default",
        *,
        cache_dir: Path | None = None,
        ports: Ports | None = None,
        config_dir: Path | None = None,
        prompts_build: Path | None = None,
        agi_host: str = "127.0.0.1",
        progress: Callable[[str], None] | None = None,
        system_name: str = "",
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not re.fullmatch(r"[A-Za-z0-9_.-]*", system_name):
            raise SwitchError(f"instance name {name!r} ({system_name!r}): use letters, digits, '.', '_' or '-'")
        self.name = name
        self.cache_dir = cache_dir or default_cache_dir()
        self.rootfs = self.cache_dir / "rootfs"
        self.inner = Path("/srv/ivr") / name  # path as seen inside the chroot
        self.home = self.rootfs / self.inner.relative_to("/")
        self.config_dir = config_dir or Path(
            os.environ.get("IVR_ASTERISK_CONFIG") or resources.asterisk_config_dir()
        )
        # Built prompts copied into the sound path: given, IVR_PROMPTS_BUILD, or the data
        # directory's (ivr.resources.prompts_build_dir).
        self.prompts_build = resources.prompts_build_dir(
            prompts_build or os.environ.get("IVR_PROMPTS_BUILD"))
        self._ports = ports
        self._proc: subprocess.Popen[bytes] | None = None  # the asterisk this object started
        self.agi_host = agi_host
        # asterisk.conf systemname: prefixes every Uniqueid and Linkedid (the call ids), so
        # switches recording into one database never make the same call id (issue 17).
        self.system_name = system_name
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))

    # ------------------------------------------------------------------ state files
    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            saved = self._read_state().get("ports")
            self._ports = Ports(**saved) if saved else Ports()
        return self._ports

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state

    def secrets(self) -> Secrets:
        """The instance's secrets, generated on first use and kept (mode 0600); a secret
        added in a later version is generated and saved the first time it is asked for."""
        path = self.home / "secrets.json"
        try:
            saved = json.loads(path.read_text())
            current = Secrets(**saved)
        except (OSError, ValueError, TypeError):
            saved, current = {}, Secrets()
        if saved != asdict(current):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(current), f)
        return current

    @property
    def trunk_uri(self) -> str:
        """Where an unregistered SIP caller calls in: the inbound trunk (pjsip.conf
        ``[anonymous]``, context ivr-inbound); the From user becomes the caller's number."""
        return f"sip:ivr@127.0.0.1:{self.ports.sip}"

    @property
    def log_file(self) -> Path:
        return self.home / "log" / "asterisk.console.log"

    @property
    def conf_inside(self) -> str:
        return str(self.inner / "etc" / "asterisk.conf")

    # ------------------------------------------------------------------ build
    def is_built(self) -> bool:
        return (self.rootfs / "usr/sbin/asterisk").exists() and (self.rootfs / ".ivr-built").exists()

    def build(self, *, force: bool = False) -> None:
        """Build the root filesystem once (about 20 s, 340 MB); reuse it afterwards."""
        if self.is_built() and not force:
            return
        require_root()
        if shutil.which("mmdebstrap") is None:
            self.progress("embedded asterisk: installing mmdebstrap with apt-get ...")
            self._run_progress(["apt-get", "update", "-q"], "apt")  # a fresh machine has no lists
            self._run_progress(["apt-get", "install", "-y", "-q", "mmdebstrap"], "apt")
        mirror = read_debian_mirror()
        tmp = self.cache_dir / "rootfs.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.progress(f"embedded asterisk: building a Debian sid root filesystem in {self.rootfs} ...")
        cmd = [
            "mmdebstrap",
            "--variant=apt",
            "--aptopt=Acquire::Check-Valid-Until \"false\"",
            "--include=" + ",".join(PACKAGES),
            "sid",
            str(tmp),
            f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} sid main",
        ]
        self._run_progress(cmd, "mmdebstrap")
        hostname = socket.gethostname()
        (tmp / "etc/hosts").write_text(
            f"127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost {hostname}\n"
        )
        (tmp / ".ivr-built").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        if self.rootfs.exists():
            shutil.rmtree(self.rootfs)
        tmp.rename(self.rootfs)
        self.progress("embedded asterisk: root filesystem ready")

    def _run_progress(self, cmd: list[str], label: str) -> None:
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
        except FileNotFoundError as exc:
            raise SwitchError(f"{cmd[0]} is not installed and could not be run: {exc}") from exc
        tail: list[str] = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail, line][-15:]
            if line.startswith(("I: ", "E: ", "W: ")) or (label == "apt" and line.startswith("Setting up")):
                self.progress(f"  {label}: {line}")
        if proc.wait() != 0:
            hint = ""
            joined = "\n".join(tail)
            if "Unable to locate package" in joined or "has no installation candidate" in joined:
                hint = " (a package is missing from the mirror)"
            elif "Could not resolve" in joined or "Failed to fetch" in joined or "Temporary failure" in joined:
                hint = " (no network to the package mirror?)"
            raise SwitchError(
                f"{label} failed with exit code {proc.returncode}{hint}; last output:\n{joined}"
            )

    # ------------------------------------------------------------------ config
    def render_config(self) -> None:
        """Copy asterisk/ into the instance and point it at the instance's dirs and ports."""
        etc = self.home / "etc"
        if etc.exists():
            shutil.rmtree(etc)
        shutil.copytree(self.config_dir, etc, ignore=shutil.ignore_patterns("*~", "*.md"))
        for sub in ("lib", "spool", "log", "run", "messages"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        ports = self.ports
        inner = self.inner
        arch_moddir = find_moddir(self.rootfs)
        rewrite_lines(
            etc / "asterisk.conf",
            {
                r"^astetcdir\s*=>.*$": f"astetcdir => {inner}/etc",
                r"^astmoddir\s*=>.*$": f"astmoddir => {arch_moddir}",
                r"^astdbdir\s*=>.*$": f"astdbdir => {inner}/lib",
                r"^astvarlibdir\s*=>.*$": "astvarlibdir => /var/lib/asterisk",
                r"^astspooldir\s*=>.*$": f"astspooldir => {inner}/spool",
                r"^astrundir\s*=>.*$": f"astrundir => {inner}/run",
                r"^astlogdir\s*=>.*$": f"astlogdir => {inner}/log",
            },
        )
        if self.system_name:  # [options] is the file's last section
            with (etc / "asterisk.conf").open("a", encoding="utf-8") as conf:
                conf.write(f"systemname = {self.system_name}\n")
        rewrite_lines(etc / "manager.conf", {r"^port\s*=.*$": f"port = {ports.ami}"})
        rewrite_lines(etc / "pjsip.conf", {r"^bind\s*=.*$": f"bind = 127.0.0.1:{ports.sip}"})
        rewrite_lines(
            etc / "rtp.conf",
            {r"^rtpstart\s*=.*$": f"rtpstart = {ports.rtp_start}", r"^rtpend\s*=.*$": f"rtpend = {ports.rtp_end}"},
        )
        rewrite_lines(
            etc / "ivr-globals.conf",
            {r"^IVR_AGI\s*=.*$": f"IVR_AGI = agi://{self.agi_host}:{ports.agi}"},
        )
        sec = self.secrets()
        write_private(
            etc / "manager_secrets.conf",
            f"[{CONTROLLER_USER}](+)\nsecret = {sec.controller}\n\n"
            # The all-classes user exists on the embedded (test) switch only.
            f"[{ADMIN_USER}]\nsecret = {sec.admin}\ndeny = 0.0.0.0/0.0.0.0\n"
            "permit = 127.0.0.1/255.255.255.255\nread = all\nwrite = all\n",
        )
        write_private(etc / AGI_KEY_FILE, agi_key_include(sec.agi_key))
        write_private(
            etc / "pjsip_secrets.conf",
            "".join(f"[{a}-auth](+)\npassword = {p}\n\n" for a, p in sec.agents.items()),
        )
        self._install_prompts()

    def _install_prompts(self) -> None:
        """Copy built prompts (<prompts_build>/<lang>/) to the sound path as ivr/<lang>/."""
        built = self.prompts_build
        if not built.is_dir():
            return
        dest = self.rootfs / "usr/share/asterisk/sounds/ivr"
        for lang_dir in built.iterdir():
            if lang_dir.is_dir():
                target = dest / lang_dir.name
                target.mkdir(parents=True, exist_ok=True)
                for f in lang_dir.iterdir():
                    if f.suffix in (".wav", ".ulaw", ".sln", ".gsm"):
                        shutil.copy2(f, target / f.name)

    # ------------------------------------------------------------------ run
    def pid(self) -> int | None:
        try:
            pid = int((self.home / "asterisk.pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie or a reused pid is not our Asterisk.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"asterisk" in cmdline and self.conf_inside.encode() in cmdline else None

    def up(self, *, timeout: float = 30.0) -> float:
        """Build if needed, start, and wait for FullyBooted on AMI. Returns seconds taken."""
        require_root()
        self.build()
        if self.pid() is not None:
            # Already running: bring its configuration and prompts up to date.
            self.render_config()
            self.cli("core reload")
            self.progress(f"embedded asterisk '{self.name}' already running (pid {self.pid()}); "
                          "configuration reloaded")
            return 0.0
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"ports": asdict(self.ports)}))
        self.render_config()
        for stale in (self.home / "run").glob("*"):
            stale.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                ["chroot", str(self.rootfs), "/usr/sbin/asterisk", "-f", "-C", self.conf_inside],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._proc = proc  # kept, so that down() reaps it (no zombie, no ResourceWarning)
        (self.home / "asterisk.pid").write_text(str(proc.pid))
        try:
            asyncio.run(
                wait_fully_booted(
                    "127.0.0.1", self.ports.ami, ADMIN_USER, self.secrets().admin,
                    timeout=timeout, alive=lambda: proc.poll() is None,
                )
            )
        except SwitchError as exc:
            self.down()
            raise SwitchError(f"{exc}\n--- last lines of {self.log_file}:\n{self.log_tail()}") from exc
        took = time.monotonic() - started
        self.progress(
            f"embedded asterisk '{self.name}' fully booted in {took:.1f} s: "
            f"AMI 127.0.0.1:{self.ports.ami}, SIP udp 127.0.0.1:{self.ports.sip} "
            f"(inbound trunk {self.trunk_uri}), "
            f"FastAGI expected at {self.agi_host}:{self.ports.agi}"
        )
        return took

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def down(self, *, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            self.cli("core stop now", timeout=5)
        except SwitchError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
            if wait_gone(pid, timeout if sig is None else 3.0):
                break
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.wait(timeout=5)
        (self.home / "asterisk.pid").unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        pid = self.pid()
        info: dict[str, Any] = {"name": self.name, "built": self.is_built(), "running": pid is not None}
        if pid is not None:
            info["pid"] = pid
            info["ports"] = asdict(self.ports)
            info["trunk"] = self.trunk_uri
            try:
                info["uptime"] = self.cli("core show uptime seconds", timeout=5).strip()
            except SwitchError as exc:
                info["error"] = str(exc)
        return info

    def cli(self, command: str, *, timeout: float = 15.0) -> str:
        if self.pid() is None:
            raise SwitchError(f"embedded asterisk '{self.name}' is not running (ivr asterisk up)")
        try:
            out = subprocess.run(
                ["chroot", str(self.rootfs), "/usr/sbin/asterisk", "-C", self.conf_inside, "-rx", command],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SwitchError(f"asterisk CLI {command!r} did not answer within {timeout} s") from exc
        if out.returncode != 0:
            raise SwitchError(f"asterisk CLI {command!r} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def env(self, *, admin: bool = False) -> dict[str, str]:
        """What a controller needs to use this switch: the least-privilege AMI user ``ivr``
        (the one ``manager.conf`` gives the controller) and its secret, the API token and
        the ports. ``admin``: also the all-classes test user, under names of its own
        (``IVR_AMI_ADMIN_*``), so it never ends up as the controller's login by accident."""
        sec = self.secrets()
        env = {
            "IVR_AMI_HOST": "127.0.0.1",
            "IVR_AMI_PORT": str(self.ports.ami),
            "IVR_AMI_USERNAME": CONTROLLER_USER,
            "IVR_AMI_SECRET": sec.controller,
            "IVR_HTTP_TOKEN": sec.http_token,
            "IVR_AGI_KEY": sec.agi_key,
            "IVR_AGI_PORT": str(self.ports.agi),
            "IVR_SIP_PORT": str(self.ports.sip),
        }
        if admin:
            env.update(IVR_AMI_ADMIN_USERNAME=ADMIN_USER, IVR_AMI_ADMIN_SECRET=sec.admin)
        return env

    def path_inside(self, host_path: Path) -> str:
        """A path under the root filesystem, as Asterisk sees it."""
        return "/" + str(Path(host_path).resolve().relative_to(self.rootfs.resolve()))


AGI_KEY_FILE = "ivr-agi-key.conf"  # #tryinclude'd inside [globals] of ivr-globals.conf


def agi_key_include(key: str) -> str:
    """The Asterisk include that gives the dialplan its FastAGI key (mode 0600; the
    controller reads the same file, or the key from IVR_AGI_KEY)."""
    return ("; ivr-agi-key.conf -- the FastAGI key this switch proves itself with on every AGI()\n"
            "; (generated; keep it mode 0600; the controller needs the same key: [agi] key_file)\n"
            f"IVR_AGI_KEY = {key}\n")


def reap_stale_test_instances(cache_dir: Path | None = None) -> list[str]:
    """Stop and remove ``pytest-<pid>[-…]`` instances whose test process is gone (a run that
    was killed before its teardown). Returns the names reaped."""
    reaped = []
    for name in iter_instances(cache_dir):
        parts = name.split("-")
        if parts[0] != "pytest" or len(parts) < 2 or not parts[1].isdigit() or Path(f"/proc/{parts[1]}").exists():
            continue
        stale = EmbeddedSwitch(name, cache_dir=cache_dir, progress=lambda _l: None)
        stale.down()
        shutil.rmtree(stale.home, ignore_errors=True)
        reaped.append(name)
    return reaped


def iter_instances(cache_dir: Path | None = None) -> Iterator[str]:
    root = (cache_dir or default_cache_dir()) / "rootfs/srv/ivr"
    if root.is_dir():
        yield from sorted(p.name for p in root.iterdir() if p.is_dir())
