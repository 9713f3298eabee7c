"""Shared by the benchmarks: machine info, percentiles, tables, result files, /proc
readings, and an embedded switch on free loopback ports."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DATA = BENCH / "data"

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


# -- machine info ---------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "ivr"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return out + ("+dirty(ivr)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def asterisk_version() -> str:
    """The embedded switch's Asterisk package version (from the root filesystem's dpkg)."""
    from ivr.switch.rootfs import default_cache_dir

    status = default_cache_dir() / "rootfs/var/lib/dpkg/status"
    try:
        block = status.read_text().split("\nPackage: asterisk\n", 1)[1].split("\n\n", 1)[0]
        for line in block.splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return "unknown"


def machine_info(*, with_asterisk: bool = True) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        panoramisk = version("panoramisk")
    except PackageNotFoundError:
        panoramisk = "?"
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": _mem_total_mb(),
        "python": platform.python_version(),
        "panoramisk": panoramisk,
        "asterisk": asterisk_version() if with_asterisk else "n/a",
        "kernel": platform.release(),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(name: str, payload: dict[str, Any], *, with_asterisk: bool = True) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "machine": machine_info(with_asterisk=with_asterisk), **payload}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


# -- statistics and tables ------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(errors_s: Iterable[float]) -> dict[str, Any]:
    """p50/p99/max (and min, n) in milliseconds of a list of errors in seconds."""
    values = [e * 1000.0 for e in errors_s]
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "min_ms": None}
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2),
            "max_ms": round(max(values), 2), "min_ms": round(min(values), 2)}


def spread(summary: dict[str, Any], *keys: str) -> str:
    """A table cell of a :func:`summary_ms`: its ``keys`` (p50, p99, max unless given) joined by "/"."""
    return "/".join(str(summary.get(k)) for k in keys or ("p50_ms", "p99_ms", "max_ms"))


def abs_summary_ms(errors_s: Iterable[float]) -> dict[str, Any]:
    """Like :func:`summary_ms` on the absolute errors (|late or early|)."""
    return summary_ms(abs(e) for e in errors_s)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain Markdown table (also readable in a terminal)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# -- /proc ----------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def proc_rss_kb(pid: int, key: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``, the peak) of process ``pid`` in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pin_to_core(core: int = 0) -> None:
    os.sched_setaffinity(0, {core})


# -- the embedded switch --------------------------------------------------------------
BASELINE_QUEUE = "bench-baseline"
# The bench's additions to the shipped configuration (rendered into a copy of asterisk/):
# a queue like the shipped `support` (no members, periodic announcement every 30 s) whose
# music is silence, so that the announcements can be heard by TALK_DETECT.
BENCH_CONFIG = {
    "musiconhold.conf": "\n[bench-silence]\nmode = files\ndirectory = /usr/share/asterisk/sounds/ivr-bench-silence\n",
    "queues.conf": (f"\n[{BASELINE_QUEUE}]\nstrategy = ringall\nmusicclass = bench-silence\n"
                    "periodic-announce = queue-periodic-announce\nperiodic-announce-frequency = 30\n"
                    "announce-frequency = 0\njoinempty = yes\nleavewhenempty = no\n"),
}


def shipped_transmit_silence() -> str:
    """``transmit_silence`` of the shipped asterisk/asterisk.conf ("yes" or "no")."""
    import re

    m = re.search(r"(?m)^transmit_silence\s*=\s*(\w+)", (ROOT / "asterisk" / "asterisk.conf").read_text())
    return m.group(1) if m else "no"


def add_transmit_silence_option(parser: Any) -> str:
    """--transmit-silence yes|no (and --no-transmit-silence); returns the shipped value."""
    shipped = shipped_transmit_silence()
    parser.add_argument("--transmit-silence", choices=("yes", "no"), default=None,
                        help="run the switch with asterisk.conf transmit_silence = yes or no "
                        f"(default: as shipped in asterisk/asterisk.conf, which says {shipped})")
    parser.add_argument("--no-transmit-silence", dest="transmit_silence", action="store_const", const="no",
                        help="the same as --transmit-silence no")
    return shipped


def with_transmit_silence(asterisk_conf: str, value: str | None) -> str:
    """``asterisk_conf`` with ``transmit_silence = value`` (None: unchanged, as shipped)."""
    import re

    if value is None:
        return asterisk_conf
    text, n = re.subn(r"(?m)^transmit_silence\s*=.*$", f"transmit_silence = {value}", asterisk_conf)
    return text if n else text.replace("[options]\n", f"[options]\ntransmit_silence = {value}\n", 1)


def start_switch(name: str, *, transmit_silence: str | None = None, rtp_ports: tuple[int, int] | None = None) -> Any:
    """An embedded Asterisk instance on free loopback ports running the shipped
    configuration plus :data:`BENCH_CONFIG`, with the built prompts and the test audio
    (``ivr-test/caller_speech`` ...). Stop it with :func:`stop_switch`.
    ``transmit_silence`` "yes" or "no" overrides the shipped asterisk.conf's (to measure
    what it costs); None runs it as shipped. ``rtp_ports`` (first, last) widens
    rtp.conf's range for SIP calls (the free-port default has 100 ports: 50 calls)."""
    import shutil
    import tempfile

    from ivr.prompts import make_test_audio
    from ivr.switch.embedded import EmbeddedSwitch, Ports

    built = ROOT / "prompts" / "build"
    subprocess.run([sys.executable, "-m", "ivr", "prompts", "build", "--out", str(built)],
                   check=True, capture_output=True)
    conf = Path(tempfile.mkdtemp(prefix="ivr-bench-conf-")) / "asterisk"
    shutil.copytree(ROOT / "asterisk", conf)
    ast = conf / "asterisk.conf"
    ast.write_text(with_transmit_silence(ast.read_text(), transmit_silence))
    for fname, extra in BENCH_CONFIG.items():
        with open(conf / fname, "a") as f:
            f.write(extra)
    ports = Ports.free()
    if rtp_ports is not None:
        ports = Ports(ami=ports.ami, agi=ports.agi, sip=ports.sip, rtp_start=rtp_ports[0], rtp_end=rtp_ports[1])
    sw = EmbeddedSwitch(name, ports=ports, config_dir=conf, prompts_build=built, progress=lambda _l: None)
    sounds = sw.rootfs / "usr/share/asterisk/sounds"
    make_test_audio(sounds / "ivr-test")
    (sounds / "ivr-bench-silence").mkdir(exist_ok=True)
    shutil.copy(sounds / "ivr-test" / "silence.wav", sounds / "ivr-bench-silence" / "silence.wav")
    sw.up()
    return sw


def stop_switch(sw: Any) -> None:
    import shutil

    sw.down()
    shutil.rmtree(sw.home, ignore_errors=True)
    if Path(sw.config_dir).parent.name.startswith("ivr-bench-conf-"):  # start_switch's copy of asterisk/
        shutil.rmtree(Path(sw.config_dir).parent, ignore_errors=True)
