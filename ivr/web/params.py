"""Request parsing with clear 400s: query parameters, dates, JSON bodies, path ids."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from aiohttp import web

from ivr.rules.dialing import PHONE_RE
from ivr.web.errors import BadRequest

CALL_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def path_id(request: web.Request, name: str, what: str) -> str:
    value = request.match_info[name]
    if not CALL_ID.match(value):
        raise BadRequest(f"{what} ids are 1-64 letters, digits, '.', '_' or '-'",
                         error_id=f"invalid-{what.replace(' ', '-')}-id", details={name: value[:100]})
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number", parameter=name, value=raw[:100]) from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}", parameter=name, value=value)
    return value


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}", parameter=name, value=raw[:100])
    return raw


def query_text(request: web.Request, name: str, pattern: str = r"^[A-Za-z0-9._@+-]{1,64}$") -> str | None:
    raw = request.query.get(name)
    if raw is not None and not re.match(pattern, raw):
        raise BadRequest(f"{name} has characters or a length that is not allowed", parameter=name,
                         value=raw[:100])
    return raw


SWITCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # as [cluster] switch


def query_switch(request: web.Request) -> str | None:
    """The ``switch`` filter (issue 17): a switch name, 1-63 letters, digits, '.', '_', '-'."""
    raw = request.query.get("switch")
    if raw is not None and not SWITCH_NAME.fullmatch(raw):
        raise BadRequest("switch must be a switch name: 1-63 letters, digits, '.', '_' or '-'",
                         error_id="invalid-switch", parameter="switch", value=raw[:100])
    return raw


def parse_day(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date, YYYY-MM-DD", parameter=name, value=raw[:100]) from None


MAX_JSON_DEPTH = 32  # every body of this API is a flat object; deeper is an attack or a bug


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body; 400 naming the fault for anything else (413 comes from
    client_max_size): wrong content type, bytes that are not UTF-8, syntax, NaN/Infinity,
    numbers too long to convert, nesting deeper than :data:`MAX_JSON_DEPTH`, not an object."""
    if request.content_type != "application/json":
        raise BadRequest("the body must be JSON (Content-Type: application/json)", error_id="invalid-json",
                         content_type=request.content_type)
    raw = await request.read()
    # Checked before parsing: json.loads recurses once per level (RecursionError at ~1,000).
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels",
                         error_id="invalid-json", max_depth=MAX_JSON_DEPTH)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 text: byte {exc.start} cannot be decoded",
                         error_id="invalid-json") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, NaN, depth
        raise BadRequest(f"the body is not valid JSON: {exc}", error_id="invalid-json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", error_id="invalid-json")
    return body


def body_phone(body: dict[str, Any], name: str = "phone", *, required: bool = True) -> str | None:
    """A phone number from a JSON body: 2-20 digits, an optional leading ``+`` (what the
    switch may dial); 400 naming the field otherwise."""
    raw = body.get(name)
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or not PHONE_RE.match(raw):
        raise BadRequest(f'"{name}" must be a phone number: 2-20 digits, an optional leading +',
                         error_id="invalid-phone", details={"field": name, "value": str(raw)[:100]})
    return raw


def body_text(body: dict[str, Any], name: str, pattern: str, what: str, default: str = "") -> str:
    """An optional string field of a JSON body matching ``pattern`` in full; 400 naming
    the field and ``what`` it should be otherwise."""
    raw = body.get(name, default)
    if not isinstance(raw, str) or not re.fullmatch(pattern, raw):
        raise BadRequest(f'"{name}" must be {what}', error_id="invalid-field",
                         details={"field": name, "value": str(raw)[:100]})
    return raw


def body_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """400 naming any field of the body that is not one of ``allowed``."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown[:5])}; allowed: "
                         f"{', '.join(allowed)}", error_id="invalid-field", details={"fields": unknown[:5]})
