"""Reading the configuration file into the typed sections of :mod:`ivr.sections`: the
line of each key (for the problems' messages) and the conversion of TOML values to the
sections' field types, each wrong type or unknown key a problem naming its key path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from typing import Any

from ivr.config_checks import Problems as _Problems


def key_lines(text: str) -> dict[str, int]:
    """Line number of each table and key of a TOML text, by key path (``agents[1].dial``).

    A line scanner, not a parser: good for error messages of ordinary files.
    """
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    prefix = ""
    key = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
    dotted = rf"{key}(?:\s*\.\s*{key})*"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := re.match(rf"^\[\[\s*({dotted})\s*\]\]", line):
            name = _join(m.group(1))
            index = counts[name] = counts.get(name, -1) + 1
            prefix = f"{name}[{index}]"
            lines.setdefault(prefix, number)
        elif m := re.match(rf"^\[\s*({dotted})\s*\]", line):
            prefix = _join(m.group(1))
            lines.setdefault(prefix, number)
        elif m := re.match(rf"^({dotted})\s*=", line):
            path = f"{prefix}.{_join(m.group(1))}" if prefix else _join(m.group(1))
            lines.setdefault(path, number)
    return lines


def _join(dotted: str) -> str:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+', dotted)
    return ".".join(p.strip("\"'") for p in parts)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, problems: _Problems) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, path, problems)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.add(path, f"expected a list, got {type(value).__name__}")
            return []
        return [_convert(v, args[0], f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(path, f"expected a table, got {type(value).__name__}")
            return {}
        return {str(k): _convert(v, args[1], f"{path}.{k}", problems) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is dt.date and isinstance(value, dt.datetime):
        problems.add(path, "expected a date (YYYY-MM-DD), got a date-time")
        return value.date()
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        problems.add(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return None
    return value


def build(cls: Any, data: Any, path: str, problems: _Problems) -> Any:
    if not isinstance(data, dict):
        problems.add(path, f"expected a table, got {type(data).__name__}")
        data = {}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("path", "warnings")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        if key not in known:
            problems.add(sub, "unknown key")
            continue
        converted = _convert(value, hints[key], sub, problems)
        if converted is not None or value is None:
            kwargs[key] = converted
    for name, f in known.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            problems.add(f"{path}.{name}" if path else name, "missing required key")
            kwargs[name] = dt.date.min if hints[name] is dt.date else ""
    return cls(**kwargs)
