"""ivr install: add the project's dialplan and AMI user to an existing Asterisk."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

from ivr import install, logs
from ivr.config import Config, load_config
from ivr.doctor import run_doctor


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "install",
        help="install the dialplan and AMI user onto an existing Asterisk (or FreePBX)",
        description="Copy the ivr-*.conf dialplan files, add their #include lines, the "
        "least-privilege AMI user and the in-call keys inside marked blocks (on FreePBX: only "
        "in extensions_custom.conf, manager_custom.conf, features_applicationmap_custom.conf), "
        "generate the AMI secret (mode 0600, also written for the controller), back up every "
        "file it changes, reload Asterisk (never restart) and run ivr doctor. Running it twice "
        "changes nothing the second time.",
    )
    p.add_argument("--asterisk-dir", default="/etc/asterisk", type=Path,
                   help="Asterisk's configuration directory (default /etc/asterisk)")
    p.add_argument("--config", "-c", default=None,
                   help="the controller's TOML config: IVR_AGI from its [agi], and ivr doctor")
    p.add_argument("--layout", choices=("auto", "asterisk", "freepbx"), default="auto",
                   help="which files to change (default: detect FreePBX)")
    p.add_argument("--controller-secret-file", default="/etc/ivr/ami.secret", type=Path,
                   help="where the controller reads the AMI secret (default /etc/ivr/ami.secret, "
                   "the file deploy/ivr.service loads)")
    p.add_argument("--asterisk-cli", default="asterisk", metavar="CMD",
                   help="the Asterisk CLI command the reloads go through, as CMD -rx '...' "
                   "(default: asterisk)")
    p.add_argument("--dry-run", action="store_true", help="print the diff of every file, change nothing")
    p.add_argument("--uninstall", action="store_true", help="remove what the installer added")
    p.add_argument("--no-reload", action="store_true", help="write the files only (Asterisk not running)")
    p.add_argument("--no-doctor", action="store_true", help="do not run ivr doctor afterwards")
    p.set_defaults(func=install_command)


def install_command(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    options = install.options_for(args.asterisk_dir, config, layout=args.layout,
                                  controller_secret_file=args.controller_secret_file)
    installer = install.Installer(options)
    try:
        changes = installer.uninstall_plan() if args.uninstall else installer.plan()
    except OSError as exc:
        raise install.InstallError(f"cannot read {exc.filename}: {exc.strerror} (run as root?)") from exc
    pending = [c for c in changes if c.old != c.new]
    what = "uninstall" if args.uninstall else "install"
    print(f"ivr {what}: {installer.layout} layout in {installer.dir}")
    if args.dry_run:
        for change in pending:
            sys.stdout.write(change.diff())
        print(f"{len(pending)} file(s) would change" if pending else "nothing to change")
        return 0
    try:
        written = installer.apply(changes, install.utc_stamp())
    except OSError as exc:
        raise install.InstallError(f"cannot write {exc.filename}: {exc.strerror} (run as root?); "
                                   "files written before it keep their backups") from exc
    for change in written:
        verb = "removed" if change.new is None else "created" if change.old is None else "updated"
        print(f"  {verb} {change.path}")
    if not written:
        print("nothing to change")
    elif not args.no_reload:
        for command in install.reload_asterisk(args.asterisk_cli):
            print(f"  asterisk -rx '{command}': ok")
    if args.uninstall or args.no_doctor:
        return 0
    return _doctor(config, options)


def _doctor(config: Config | None, options: install.InstallOptions) -> int:
    cfg = config or Config()
    secret = Path(options.controller_secret_file).read_text().strip()
    cfg = dataclasses.replace(cfg, ami=dataclasses.replace(cfg.ami, username="ivr", secret=secret))
    if not cfg.agi.key:
        # The FastAGI key the installer generated: the doctor's listener must know it, as
        # the controller will (systemd credential agi-key, or [agi] key_file).
        key_file = Path(options.asterisk_dir) / install.AGI_KEY_FILE
        cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, key=install.read_agi_key(key_file)))
        print(f"FastAGI key: {key_file} (give the controller the same: [agi] key_file = \"{key_file}\", "
              "or deploy/ivr.service's credential agi-key)")
    logs.configure(json=False, level="WARNING")
    print("ivr doctor:")
    checks = asyncio.run(run_doctor(cfg, timeout=10.0))
    for check in checks:
        print("  " + check.line())
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"installed; ivr doctor found {len(failed)} problem(s) above")
        return 1
    print("installed; ivr doctor: all checks passed")
    return 0
