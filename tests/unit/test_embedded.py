"""The embedded switch's pure parts: mirror discovery, config rendering, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr import resources
from ivr.cli import main
from ivr.errors import SwitchError
from ivr.switch import embedded
from ivr.switch.embedded import EmbeddedSwitch, Ports, read_debian_mirror


def test_mirror_from_deb822_sources(tmp_path: Path):
    src = tmp_path / "debian.sources"
    src.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n"
                   "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    assert read_debian_mirror([src]) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path):
    src = tmp_path / "sources.list"
    src.write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n")
    assert read_debian_mirror([src]) == "http://mirror.example/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SwitchError, match="no Debian archive found"):
        read_debian_mirror([tmp_path / "missing.list"])


def test_not_root_is_a_clear_error_not_a_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("IVR_CACHE_DIR", str(tmp_path))
    assert main(["asterisk", "--name", "x", "up"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "Traceback" not in err


def test_bad_instance_name():
    with pytest.raises(SwitchError, match="instance name"):
        EmbeddedSwitch("../etc")


def test_render_config_points_at_instance_dirs_and_ports(tmp_path: Path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/lib/x86_64-linux-gnu/asterisk/modules").mkdir(parents=True)
    sw = EmbeddedSwitch("unit", cache_dir=tmp_path, ports=Ports(ami=15038, agi=14573, sip=15060,
                                                                  rtp_start=30000, rtp_end=30099))
    sw.render_config()
    etc = sw.home / "etc"
    conf = (etc / "asterisk.conf").read_text()
    assert "astetcdir => /srv/ivr/unit/etc" in conf and "astspooldir => /srv/ivr/unit/spool" in conf
    assert "port = 15038" in (etc / "manager.conf").read_text()
    assert "bind = 127.0.0.1:15060" in (etc / "pjsip.conf").read_text()
    assert "IVR_AGI = agi://127.0.0.1:14573" in (etc / "ivr-globals.conf").read_text()
    secrets = (etc / "manager_secrets.conf")
    assert secrets.stat().st_mode & 0o077 == 0, "secrets must not be group/world readable"
    assert sw.secrets().controller in secrets.read_text()
    # No secret is in the shipped configuration itself.
    lines = [line.strip() for p in resources.asterisk_config_dir().glob("*.conf")
             for line in p.read_text().splitlines() if not line.strip().startswith(";")]
    assert not [line for line in lines if line.startswith(("secret", "password"))]


def test_secrets_are_generated_once_and_upgraded_in_place(tmp_path: Path):
    import json

    sw = EmbeddedSwitch("unit", cache_dir=tmp_path)
    first = sw.secrets()
    assert first.http_token and first.controller != first.admin
    assert sw.secrets() == first  # kept
    path = sw.home / "secrets.json"
    old = json.loads(path.read_text())
    del old["http_token"]  # a secrets file from before the API token existed
    path.write_text(json.dumps(old))
    upgraded = sw.secrets()
    assert upgraded.controller == first.controller and upgraded.http_token
    assert json.loads(path.read_text())["http_token"] == upgraded.http_token
    assert path.stat().st_mode & 0o077 == 0
    assert sw.env()["IVR_HTTP_TOKEN"] == upgraded.http_token


def test_env_exports_the_controller_user_and_the_admin_only_on_request(tmp_path: Path, monkeypatch, capsys):
    from ivr.cli import main

    sw = EmbeddedSwitch("unit", cache_dir=tmp_path)
    sec = sw.secrets()
    env = sw.env()
    assert (env["IVR_AMI_USERNAME"], env["IVR_AMI_SECRET"]) == ("ivr", sec.controller)
    assert sec.admin not in env.values() and not any("ADMIN" in k for k in env)
    admin = sw.env(admin=True)
    assert (admin["IVR_AMI_ADMIN_USERNAME"], admin["IVR_AMI_ADMIN_SECRET"]) == ("ivr-admin", sec.admin)
    assert admin["IVR_AMI_SECRET"] == sec.controller  # the controller's login stays least-privilege

    monkeypatch.setenv("IVR_CACHE_DIR", str(tmp_path))
    assert main(["asterisk", "--name", "unit", "env"]) == 0
    out = capsys.readouterr().out
    assert "export IVR_AMI_USERNAME=ivr\n" in out and sec.admin not in out
    assert main(["asterisk", "--name", "unit", "env", "--admin"]) == 0
    assert f"export IVR_AMI_ADMIN_SECRET={sec.admin}" in capsys.readouterr().out
