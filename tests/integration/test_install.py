"""``ivr install`` onto Debian's stock /etc/asterisk, booted in the embedded root filesystem.

The admin's tree is a copy of the root filesystem's /etc/asterisk (the sid ``asterisk``
package's own files; the original is never touched). Its ``asterisk.conf`` keeps
``[directories](!)`` as a template, so the test boots with a ``-C`` file of its own that
points the directories at the copy and at writable runtime directories; the admin's files
are changed only by the installer. Then: a call originated by the installed AMI user through
``ivr-inbound`` reaches a FastAGI listener, a second install changes nothing (byte for byte),
and ``--uninstall`` leaves the tree as it was (plus the backups).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivr.switch.rootfs import default_cache_dir
from tests import REPO
from tests.integration.amitools import AmiRecorder, until

ROOTFS = default_cache_dir() / "rootfs"
STOCK_AMI_PORT = 5038  # the stock manager.conf's


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (backups left out) -> sha256 and mode."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if ".ivr-backup-" not in p.name:
                out[str(p)] = f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mode & 0o7777:o}"
    return out


@dataclass
class Stock:
    name: str
    home: Path  # on the host
    inner: str  # the same, inside the chroot
    proc: subprocess.Popen[bytes]

    @property
    def etc(self) -> Path:
        return self.home / "etc"

    @property
    def cli_prefix(self) -> str:
        return f"chroot {ROOTFS} /usr/sbin/asterisk -C {self.inner}/boot.conf"

    def cli(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*self.cli_prefix.split(), "-rx", command], capture_output=True, text=True,
                             timeout=30, check=False)
        if check:
            assert out.returncode == 0, f"{command}: {out.stdout}{out.stderr}"
        return out

    def log(self) -> str:
        try:
            return (self.home / "console.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _moddir() -> str:
    (found,) = [p for p in ROOTFS.glob("usr/lib/*/asterisk/modules") if p.is_dir()]
    return "/" + str(found.relative_to(ROOTFS))


@pytest.fixture
def stock() -> Iterator[Stock]:
    if not (ROOTFS / "usr/sbin/asterisk").exists():
        pytest.fail("no embedded root filesystem: run `ivr asterisk build` (tests/run does)")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", STOCK_AMI_PORT))
        except OSError:
            pytest.fail(f"port {STOCK_AMI_PORT} is taken: the stock manager.conf listens there")
    name = f"pytest-{os.getpid()}-stock"
    inner = f"/srv/ivr/{name}"
    home = ROOTFS / inner.lstrip("/")
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(ROOTFS / "etc/asterisk", home / "etc", symlinks=True)
    for sub in ("lib", "spool", "log", "run", "cache"):
        (home / sub).mkdir(parents=True)
    # Test-only: where this instance keeps its runtime files (the admin's asterisk.conf has
    # [directories](!), a template, so it cannot say it).
    (home / "boot.conf").write_text(
        "[directories]\n"
        f"astetcdir => {inner}/etc\nastmoddir => {_moddir()}\nastvarlibdir => /var/lib/asterisk\n"
        f"astdbdir => {inner}/lib\nastkeydir => /var/lib/asterisk\nastdatadir => /usr/share/asterisk\n"
        f"astagidir => /usr/share/asterisk/agi-bin\nastspooldir => {inner}/spool\nastrundir => {inner}/run\n"
        f"astlogdir => {inner}/log\nastcachedir => {inner}/cache\nastsbindir => /usr/sbin\n"
    )
    with open(home / "console.log", "wb") as log:
        proc = subprocess.Popen(["chroot", str(ROOTFS), "/usr/sbin/asterisk", "-f", "-C", f"{inner}/boot.conf"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    sw = Stock(name, home, inner, proc)
    try:
        deadline = time.monotonic() + 60
        while sw.cli("core waitfullybooted", check=False).returncode != 0:
            assert proc.poll() is None, f"the stock Asterisk exited:\n{sw.log()}"
            assert time.monotonic() < deadline, f"the stock Asterisk did not boot:\n{sw.log()}"
            time.sleep(0.1)  # poll: the CLI socket, which has no event to wait on; bounded
        yield sw
    finally:
        sw.cli("core stop now", check=False)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        shutil.rmtree(home, ignore_errors=True)


def ivr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True, cwd="/",
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=False)
    if check:
        assert out.returncode == 0, f"ivr {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


async def test_install_on_debians_stock_asterisk(stock: Stock, tmp_path: Path) -> None:
    before = snapshot(stock.etc)
    # The prompts in the sound path, as the admin's step 3 does (the doctor checks them).
    ivr("prompts", "install", "--out", str(REPO / "prompts/build"),
        "--dest", str(ROOTFS / "usr/share/asterisk/sounds/ivr"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        agi_port = s.getsockname()[1]
    config = tmp_path / "ivr.toml"
    config.write_text(f"[agi]\nport = {agi_port}\n")
    secret_file = tmp_path / "etc-ivr" / "ami.secret"
    args = ["install", "--asterisk-dir", str(stock.etc), "--config", str(config),
            "--controller-secret-file", str(secret_file), "--asterisk-cli", stock.cli_prefix]

    dry = ivr(*args, "--dry-run")
    assert snapshot(stock.etc) == before and not secret_file.exists(), "--dry-run wrote something"
    assert f"+++ {stock.etc}/extensions.conf" in dry.stdout and "+#include ivr-inbound.conf" in dry.stdout
    assert "+#include ivr-doctor.conf" in dry.stdout and "+secret = ********" in dry.stdout

    first = ivr(*args)
    assert "asterisk -rx 'dialplan reload': ok" in first.stdout
    assert "ivr doctor: all checks passed" in first.stdout, first.stdout
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert (stock.etc / "ivr-manager-secret.conf").stat().st_mode & 0o777 == 0o600
    changed = {p for p in set(snapshot(stock.etc)) | set(before) if snapshot(stock.etc).get(p) != before.get(p)}
    assert {Path(p).name for p in changed} == {
        "extensions.conf", "manager.conf", "features.conf", ".ivr-install.json", "ivr-globals.conf",
        "ivr-inbound.conf", "ivr-agents.conf", "ivr-hold.conf", "ivr-unclear.conf",
        "ivr-transfer.conf", "ivr-callback.conf", "ivr-doctor.conf",
        "ivr-manager.conf", "ivr-manager-secret.conf", "ivr-features.conf", "ivr-agi-key.conf"}
    assert "ivrtransfer" in stock.cli("features show").stdout

    # A call into ivr-inbound, originated by the installed least-privilege AMI user, reaches
    # the controller's FastAGI address.
    seen: list[dict[str, str]] = []
    server = await asyncio.start_server(_agi_handler(seen), "127.0.0.1", agi_port)
    rec = await AmiRecorder("127.0.0.1", STOCK_AMI_PORT, "ivr", secret_file.read_text().strip()).connect()
    try:
        reply = await rec.action({"Action": "Originate", "Channel": "Local/s@ivr-inbound", "Application": "Wait",
                                  "Data": "10", "Async": "true", "CallerID": "ivr-test <555>"})
        first_reply = reply[0] if isinstance(reply, list) else reply
        assert first_reply.get("Response") == "Success", reply
        await until(lambda: seen, 15, "FastAGI request from the stock Asterisk")
        # ... proving itself with the FastAGI key the installer generated (ivr-agi-key.conf)
        key = re.search(r"(?m)^IVR_AGI_KEY = (\S+)$", (stock.etc / "ivr-agi-key.conf").read_text())
        assert key is not None and len(key.group(1)) >= 32
        assert seen[0]["agi_request"] == f"agi://127.0.0.1:{agi_port}/inbound?ivr_key={key.group(1)}"
        assert seen[0]["agi_context"] == "ivr-agi"  # ivr-inbound reaches FastAGI through [ivr-agi]
        await until(lambda: _no_channels(rec), 15, "the test call to end")
    finally:
        rec.close()
        server.close()

    # Twice = once.
    after_first = snapshot(stock.etc, secret_file)
    second = ivr(*args, "--no-doctor")
    assert "nothing to change" in second.stdout
    assert snapshot(stock.etc, secret_file) == after_first

    ivr(*args, "--uninstall")
    assert snapshot(stock.etc) == before
    assert not secret_file.exists()
    assert "Context 'ivr-inbound'" not in stock.cli("dialplan show ivr-inbound", check=False).stdout
    assert "ivrtransfer" not in stock.cli("features show").stdout


def _agi_handler(seen: list[dict[str, str]]):
    """A bare FastAGI listener: records the request, ends the call with IVR_RESULT=done."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = {}
        while (line := (await reader.readline()).decode().strip()):
            key, _, value = line.partition(":")
            headers[key] = value.strip()
        seen.append(headers)
        writer.write(b"SET VARIABLE IVR_RESULT done\n")
        await writer.drain()
        await reader.readline()
        writer.close()

    return serve


async def _no_channels(rec: AmiRecorder) -> bool:
    return not await rec.channels()
