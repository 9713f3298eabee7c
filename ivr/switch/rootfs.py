"""Where the embedded Asterisk's root filesystem comes from: the cache it lives in
(``IVR_CACHE_DIR``, else ``$XDG_CACHE_HOME/ivr``), the Debian packages it is built from and
this machine's Debian mirror they are fetched from."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ivr.errors import SwitchError

PACKAGES = ("asterisk", "asterisk-core-sounds-en-gsm", "asterisk-moh-opsound-gsm")


def default_cache_dir() -> Path:
    base = os.environ.get("IVR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ivr"
    )
    return Path(base)


def read_debian_mirror(paths: list[Path] | None = None) -> str:
    """The Debian archive URI of this machine's apt sources (deb822 or one-line)."""
    if paths is None:
        paths = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
        paths += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
        paths.append(Path("/etc/apt/sources.list"))
    uris: list[str] = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris += re.findall(r"^\s*URIs:\s*(\S+)", text, flags=re.MULTILINE)
        uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, flags=re.MULTILINE)
    for uri in uris:
        if "security" not in uri and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise SwitchError(
        "no Debian archive found in this machine's apt sources "
        "(/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); "
        "the embedded Asterisk needs one to build its root filesystem"
    )
