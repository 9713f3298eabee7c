"""Request parsing with clear 400s: query parameters, dates, JSON bodies, path ids."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from aiohttp import web

from ivr.web.errors import BadRequest

CALL_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def path_id(request: web.Request, name: str, what: str) -> str:
    value = request.match_info[name]
    if not CALL_ID.match(value):
        raise BadRequest(f"{what} ids are 1-64 letters, digits, '.', '_' or '-'",
                         error_id=f"invalid-{what.replace(' ', '-')}-id", **{name: value[:100]})
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


def parse_day(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date, YYYY-MM-DD", parameter=name, value=raw[:100]) from None


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body; 400 for anything else (413 comes from client_max_size)."""
    if request.content_type != "application/json":
        raise BadRequest("the body must be JSON (Content-Type: application/json)", error_id="invalid-json",
                         content_type=request.content_type)
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", error_id="invalid-json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", error_id="invalid-json")
    return body
