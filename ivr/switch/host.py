"""Host-side helpers of the embedded switch: free loopback ports, the root check, the
module directory inside the root filesystem, config rewrites, private files, and waiting
for a process to go."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ivr.errors import SwitchError


@dataclass(frozen=True)
class Ports:
    ami: int = 5038
    agi: int = 4573
    sip: int = 5060
    rtp_start: int = 10000
    rtp_end: int = 10999

    @classmethod
    def free(cls) -> Ports:
        """Ports nobody listens on now (for tests: no fixed host ports)."""
        tcp = [free_port(socket.SOCK_STREAM) for _ in range(2)]
        sip = free_port(socket.SOCK_DGRAM)
        # 20000-29999 by process (side-by-side test workers differ); 30000-39999 is the
        # SIP benchmark's fixed range (bench/sip_calls.py).
        base = 20000 + (os.getpid() % 100) * 100
        return cls(ami=tcp[0], agi=tcp[1], sip=sip, rtp_start=base, rtp_end=base + 99)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_root() -> None:
    if os.geteuid() != 0:
        raise SwitchError(
            "the embedded Asterisk needs root (mmdebstrap and chroot); run as root, "
            "or point the controller at an external Asterisk (IVR_EXTERNAL=1)"
        )


def find_moddir(rootfs: Path) -> str:
    for cand in [*sorted(rootfs.glob("usr/lib/*/asterisk/modules")), rootfs / "usr/lib/asterisk/modules"]:
        if cand.is_dir():
            return "/" + str(cand.relative_to(rootfs))
    raise SwitchError(f"no Asterisk module directory in {rootfs}: rebuild with `ivr asterisk build --force`")


def rewrite_lines(path: Path, subs: dict[str, str]) -> None:
    text = path.read_text()
    for pattern, repl in subs.items():
        text, n = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)
        if n == 0:
            raise SwitchError(f"{path.name}: expected a line matching {pattern!r} to rewrite")
    path.write_text(text)


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
