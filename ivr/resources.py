"""Where the package's own data is, and where built prompts go.

Shipped with the package (read-only, found with :mod:`importlib.resources`):

* the Asterisk configuration the project ships and tests: top-level ``asterisk/`` in the
  source tree, installed as ``ivr/_data/asterisk/``;
* the prompt catalogs (``<lang>.toml``) and studio recordings (``recordings/<lang>/``):
  top-level ``prompts/``, installed as ``ivr/_data/prompts/``.

In the source tree ``ivr/_data/asterisk`` and ``ivr/_data/prompts`` are symbolic links to
the top-level directories, so an editable install (``pip install -e .``) reads the
checkout itself and a wheel carries copies (package-data in ``pyproject.toml``).

Built prompts (``ivr prompts build``) are written, the first rule that applies winning:

1. the directory given: ``--out`` (or ``[prompts] build`` in the configuration);
2. ``$XDG_DATA_HOME/ivr/prompts`` when ``XDG_DATA_HOME`` is set (the systemd unit sets it
   to ``/var/lib``, its ``StateDirectory=ivr``);
3. ``/var/lib/ivr/prompts`` when running as root (a system install);
4. ``~/.local/share/ivr/prompts`` otherwise (the XDG default for a user).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SYSTEM_DATA_DIR = Path("/var/lib/ivr")


def _shipped(name: str) -> Path:
    found = resources.files("ivr") / "_data" / name
    if not isinstance(found, Path) or not found.is_dir():  # e.g. a zipped install
        raise FileNotFoundError(f"the ivr package has no {name}/ data at {found}: reinstall ivr "
                                "from a wheel or with `pip install -e .` from a checkout")
    return found


def asterisk_config_dir() -> Path:
    """The shipped Asterisk configuration directory (``asterisk.conf``, ``ivr-*.conf``...)."""
    return _shipped("asterisk")


def prompt_catalog_dir() -> Path:
    """The shipped prompt catalogs: ``<lang>.toml`` and ``recordings/<lang>/``."""
    return _shipped("prompts")


def data_dir() -> Path:
    """ivr's writable data directory (rules 2-4 of the module docstring)."""
    if xdg := os.environ.get("XDG_DATA_HOME"):
        return Path(xdg) / "ivr"
    if os.geteuid() == 0:
        return SYSTEM_DATA_DIR
    return Path.home() / ".local" / "share" / "ivr"


def prompts_build_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """Where built prompts are: ``given`` if set, else ``<data_dir()>/prompts``."""
    return Path(given) if given else data_dir() / "prompts"


def prompts_source_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """Where prompt catalogs are read: ``given`` if set, else the shipped catalogs."""
    return Path(given) if given else prompt_catalog_dir()
