"""The embedded switch's pure parts: mirror discovery, config rendering, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ivr import resources
from ivr.cli import main
from ivr.errors import SwitchError
from ivr.switch.embedded import EmbeddedSwitch
from ivr.switch.host import Ports
from ivr.switch.rootfs import read_debian_mirror
from tests import REPO


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
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
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
    # The FastAGI key: a 0600 include in [globals], passed by every AGI() of the dialplan.
    key_file = etc / "ivr-agi-key.conf"
    assert key_file.stat().st_mode & 0o077 == 0
    assert f"IVR_AGI_KEY = {sw.secrets().agi_key}\n" in key_file.read_text()
    assert len(sw.secrets().agi_key) >= 32 and sw.env()["IVR_AGI_KEY"] == sw.secrets().agi_key
    assert "#tryinclude ivr-agi-key.conf" in (etc / "ivr-globals.conf").read_text()
    # Every FastAGI URI (the [ivr-agi] routine's AGI() lines, Queue()'s AGI argument)
    # carries the key; every other context reaches the controller through [ivr-agi].
    code = [line for p in etc.glob("ivr-*.conf") for line in p.read_text().splitlines()
            if not line.lstrip().startswith(";")]
    agi_uris = [line for line in code if "AGI(" in line or "/agent-answered" in line]
    assert len(agi_uris) >= 4 and all("?ivr_key=${IVR_AGI_KEY}" in line for line in agi_uris), agi_uris
    assert all("AGI(${addr}/" in line for line in code if "AGI(" in line), "AGI() only in [ivr-agi]"
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


def test_status_shows_the_inbound_trunk(monkeypatch, capsys, tmp_path: Path):
    """`ivr asterisk status` JSON has the SIP URI of the inbound trunk (pjsip.conf
    [anonymous]) on the instance's own SIP port."""
    import json

    monkeypatch.setenv("IVR_CACHE_DIR", str(tmp_path))
    sw = EmbeddedSwitch("unit", ports=Ports(ami=15038, agi=14573, sip=15099))
    sw.home.mkdir(parents=True)
    sw.state_file.write_text(json.dumps({"ports": {"ami": 15038, "agi": 14573, "sip": 15099,
                                                   "rtp_start": 30000, "rtp_end": 30099}}))
    monkeypatch.setattr(EmbeddedSwitch, "pid", lambda self: 4242)
    monkeypatch.setattr(EmbeddedSwitch, "cli", lambda self, command, timeout=15.0: "12\n")
    assert main(["asterisk", "--name", "unit", "status"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["running"] and info["trunk"] == "sip:ivr@127.0.0.1:15099"
    assert info["ports"]["sip"] == 15099


def test_shipped_trunk_and_agent_keys_config():
    """The inbound trunk is the anonymous endpoint in ivr-inbound (module loaded
    explicitly, no identify-by-IP), and the agent keys are never a global."""
    etc = REPO / "asterisk"
    pjsip = (etc / "pjsip.conf").read_text()
    section = pjsip.split("[anonymous]\n", 1)[1].split("\n[", 1)[0]
    settings = dict(line.split(" = ", 1) for line in section.splitlines()
                    if " = " in line and not line.startswith(";"))
    assert settings["type"] == "endpoint" and settings["context"] == "ivr-inbound"
    assert settings["allow"] == "ulaw,alaw" and settings["dtmf_mode"] == "rfc4733"
    assert settings["direct_media"] == "no" and settings["rtp_symmetric"] == "yes"
    assert settings["rtp_timeout"] == "0" and settings["trust_id_inbound"] == "no"
    active = [line.strip() for line in pjsip.splitlines() if not line.strip().startswith(";")]
    assert "type = identify" not in active  # identify-by-IP would capture the agent phones
    modules = (etc / "modules.conf").read_text()
    assert "autoload = no" in modules and "load = res_pjsip_endpoint_identifier_anonymous.so" in modules
    dialplan = "".join(p.read_text() for p in etc.glob("ivr-*.conf"))
    code = [line for line in dialplan.splitlines() if not line.lstrip().startswith(";")]
    assert not [line for line in code if line.startswith("DYNAMIC_FEATURES")]
    assert not [line for line in code if "__DYNAMIC_FEATURES" in line]
    # every Dial/Queue towards agents arms the keys on the agent leg only
    for line in code:
        if "Queue(" in line or ("Dial(" in line and "IVR_AGENT_DIAL" in line):
            assert "b(ivr-agent-keys^s^1)" in line, line
    inbound = (etc / "ivr-inbound.conf").read_text().split("exten => s,1,", 1)[1].splitlines()
    assert inbound[0].startswith("Set(CALLERID(num)=${FILTER(0-9+,")
    assert inbound[1].lstrip().startswith("same => n,Set(CALLERID(name)=${FILTER(")
