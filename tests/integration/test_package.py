"""The wheel carries its data: built from the source tree, installed into a fresh venv, and
every command run from ``/`` as an administrator would after ``pip install``.

No Asterisk here (``ivr doctor`` stops at the AMI login, after the checks that need the
package's own data). Runs offline: the wheel is built without build isolation, with the
setuptools already installed, and the venv borrows the dependencies from the system site
packages; the ivr package itself comes from the wheel only (asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import REPO

IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "test-artifacts",
                                 "tests", "bench", ".pytest_cache")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ivr installed from a wheel built from a copy of the source tree."""
    base = tmp_path_factory.mktemp("package")
    src = base / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=IGNORED)
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(wheels), str(src)], check=True)
    (wheel,) = wheels.glob("ivr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("ivr/_data/asterisk/ivr-inbound.conf", "ivr/_data/asterisk/ivr-doctor.conf",
                 "ivr/_data/asterisk/manager.conf", "ivr/_data/prompts/zh-CN.toml",
                 "ivr/_data/prompts/en-US.toml"):
        assert data in names, f"{data} not in the wheel"
    assert not [n for n in names if n.startswith("ivr/_data/prompts/build/")], "built audio in the wheel"
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True)
    subprocess.run([str(env_dir / "bin/pip"), "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", "--disable-pip-version-check", str(wheel)], check=True)
    shutil.rmtree(src)  # nothing may read the source tree from here on
    return env_dir


def run(venv: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XDG_DATA_HOME")}
    out = subprocess.run([str(venv / "bin/ivr"), *args], cwd="/", capture_output=True, text=True,
                         env={**clean, **(env or {})}, timeout=120, check=False)
    if check:
        assert out.returncode == 0, f"ivr {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def test_the_package_comes_from_the_wheel(venv: Path) -> None:
    out = subprocess.run(
        [str(venv / "bin/python"), "-c",
         ("import ivr, ivr.resources as r; print(ivr.__file__); print(r.asterisk_config_dir()); "
          "print(r.prompt_catalog_dir())")],
        cwd="/", capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    )
    module, asterisk, prompts = out.stdout.split()
    site = str(venv / "lib")
    assert module.startswith(site) and asterisk.startswith(site) and prompts.startswith(site), out.stdout
    assert (Path(asterisk) / "ivr-doctor.conf").is_file()


def test_greeting_and_check_config_from_root(venv: Path) -> None:
    out = run(venv, "greeting", "--at", "2027-09-15T09:30", "--json")
    greeting = json.loads(out.stdout)
    assert greeting["holiday"] == "mid_autumn"
    assert greeting["prompts"] == ["good_morning", "holiday_mid_autumn", "holiday_welcome"]
    assert greeting["text"].startswith("早上好!中秋节快乐!")
    sample = run(venv, "check-config", str(REPO / "deploy/ivr.toml"))
    assert "OK (2 agents, languages zh-CN, en-US" in sample.stdout


def test_prompts_build_into_the_data_directory(venv: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"XDG_DATA_HOME": str(data)}
    missing = run(venv, "prompts", "check", env=env, check=False)
    assert missing.returncode == 1
    assert f"{data}/ivr/prompts/zh-CN/good_morning.wav: missing" in missing.stdout
    # A build of the checkout's set, copied in, is up to date: the incremental build of the
    # shipped catalogs into the data directory has nothing to speak (fast, no espeak needed).
    built = REPO / "prompts" / "build"
    if not (built / "zh-CN" / "manifest.json").is_file():
        pytest.fail("prompts/build is not built: run `ivr prompts build --out prompts/build` (tests/run does)")
    shutil.copytree(built, data / "ivr" / "prompts")
    out = run(venv, "prompts", "build", "--lang", "zh-CN", "--lang", "en-US", env=env)
    assert " 0 built" in out.stdout and f"in {data}/ivr/prompts/" in out.stdout, out.stdout
    ok = run(venv, "prompts", "check", env=env)
    assert ok.stdout.strip() == f"ok: en-US, zh-CN complete in {data}/ivr/prompts/"


def test_doctor_reaches_the_switch_check(venv: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "ivr.toml"
    config.write_text(f"[ami]\nport = {port}\n")
    out = run(venv, "doctor", "--config", str(config), "--timeout", "0.5", check=False)
    assert out.returncode == 1
    assert out.stdout.startswith(f"[FAIL] AMI login: AMI 127.0.0.1:{port} not connected"), out.stdout
    assert "catalog" not in out.stdout + out.stderr


def test_help_from_root(venv: Path) -> None:
    out = run(venv, "--help")
    assert "install" in out.stdout and "prompts" in out.stdout


def test_install_dry_run_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    etc = tmp_path / "asterisk"
    etc.mkdir()
    (etc / "extensions.conf").write_text("[general]\n")
    out = run(venv, "install", "--asterisk-dir", str(etc), "--controller-secret-file",
              str(tmp_path / "ami.secret"), "--dry-run")
    assert f"+++ {etc}/ivr-inbound.conf" in out.stdout and f"+++ {etc}/ivr-doctor.conf" in out.stdout
    assert "+read = call,user,agent,dialplan,reporting" in out.stdout
    assert sorted(p.name for p in etc.iterdir()) == ["extensions.conf"]


def test_an_editable_install_reads_the_checkouts_data(tmp_path: Path) -> None:
    """``pip install -e .`` (README, CI): ivr/_data/* are links into the checkout's dirs."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=IGNORED)
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True)
    # What `pip install -e` does (PEP 660), with this interpreter's setuptools (offline).
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b; b.build_editable({str(wheels)!r})"],
                   cwd=src, check=True, capture_output=True)
    (wheel,) = wheels.glob("ivr-*.whl")
    subprocess.run([str(env_dir / "bin/pip"), "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    "--disable-pip-version-check", str(wheel)], check=True)
    out = subprocess.run(
        [str(env_dir / "bin/python"), "-c",
         "import ivr.resources as r; print(r.asterisk_config_dir().resolve());"
         " print(r.prompt_catalog_dir().resolve())"],
        cwd="/", capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    )
    assert out.stdout.split() == [str(src / "asterisk"), str(src / "prompts")]
    greeting = run(env_dir, "greeting", "--at", "2027-09-15T09:30", "--json")
    assert json.loads(greeting.stdout)["holiday"] == "mid_autumn"
