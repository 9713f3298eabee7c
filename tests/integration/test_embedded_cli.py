"""`ivr asterisk up|status|cli|env|down` on the embedded switch, as an admin runs them:
the cached root filesystem is reused, the switch answers, and `down` leaves no process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ivr.switch.embedded import EmbeddedSwitch
from ivr.switch.host import Ports


def ivr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True,
                          timeout=120, check=check)


def asterisk_pids(conf: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"/usr/sbin/asterisk" in cmdline and conf.encode() in cmdline:
                pids.append(int(proc.name))
    return pids


def test_up_status_cli_env_down_leaves_nothing_behind():
    name = f"pytest-{os.getpid()}-cli"
    ports = Ports.free()
    sw = EmbeddedSwitch(name)
    try:
        started = time.monotonic()
        up = ivr("asterisk", "--name", name, "up", "--ami-port", str(ports.ami), "--agi-port", str(ports.agi),
                 "--sip-port", str(ports.sip))
        took = time.monotonic() - started
        assert "fully booted" in up.stderr
        assert "building" not in up.stderr, "the cached root filesystem must be reused"
        assert took < 20, f"a cached start took {took:.1f} s"

        status = ivr("asterisk", "--name", name, "status")
        info = json.loads(status.stdout)
        assert info["running"] and info["ports"]["ami"] == ports.ami and "uptime" in info

        assert "ivr-inbound" in ivr("asterisk", "--name", name, "cli", "dialplan show ivr-inbound").stdout
        env = ivr("asterisk", "--name", name, "env").stdout
        assert f"export IVR_AMI_PORT={ports.ami}" in env and "IVR_AMI_SECRET=" in env
        assert "export IVR_AMI_USERNAME=ivr\n" in env and "ADMIN" not in env  # least privilege
        assert "export IVR_AMI_ADMIN_USERNAME=ivr-admin" in ivr("asterisk", "--name", name, "env", "--admin").stdout
        assert asterisk_pids(sw.conf_inside)

        again = ivr("asterisk", "--name", name, "up")  # idempotent: already running
        assert "already running" in again.stderr

        ivr("asterisk", "--name", name, "down")
        assert asterisk_pids(sw.conf_inside) == []
        stopped = ivr("asterisk", "--name", name, "status", check=False)
        assert stopped.returncode == 3 and json.loads(stopped.stdout)["running"] is False
        failed = ivr("asterisk", "--name", name, "cli", "core show uptime", check=False)
        assert failed.returncode == 2 and "not running" in failed.stderr
    finally:
        sw.down()
        shutil.rmtree(sw.home, ignore_errors=True)
