"""HTTP routes of the call-backs (aiohttp): parse the request, call :class:`CallbackService`.

    POST /api/callbacks                       a call-back: {"phone", "target", "best_time", "held_by",
                                              "call_id"}; a duplicate merges (keeps its place)
    GET  /api/callbacks/queue                 open call-backs in line: place, next attempt
    POST /api/callbacks/{callback_id}/cancel  cancel (an agent still deciding is let go)
    POST /api/callbacks/{callback_id}/retry   due now (a failed or expired one opens again)

Every call-back, open or not, with its history: ``GET /api/callbacks`` (the call records).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.callbacks.service import CallbackService
from ivr.web.params import CALL_ID, body_fields, body_phone, body_text, json_body, path_id


def callback_routes(service: CallbackService) -> list[web.RouteDef]:
    async def queue(_request: web.Request) -> web.Response:
        return web.json_response({"callbacks": await service.queue()})

    async def cancel(request: web.Request) -> web.Response:
        return web.json_response(await service.cancel(path_id(request, "callback_id", "callback")))

    async def retry(request: web.Request) -> web.Response:
        return web.json_response(await service.retry_now(path_id(request, "callback_id", "callback")))

    async def create(request: web.Request) -> web.Response:
        body = await json_body(request)
        body_fields(body, FIELDS)
        phone = body_phone(body, "phone")
        assert phone is not None  # required
        row = await service.create(
            phone=phone, target=body_text(body, "target", r"[A-Za-z0-9:_-]{0,80}", "an agent number or queue:NAME"),
            best_time=body_text(body, "best_time", r"[A-Za-z0-9: -]{1,40}", '"asap", "HH:MM-HH:MM" or '
                                '"tomorrow HH:MM-HH:MM"', default="asap"),
            held_by=body_text(body, "held_by", r"[0-9]{0,20}", "an agent number"),
            call_id=body_text(body, "call_id", f"(?:{CALL_ID.pattern[1:-1]})?", "a call id"))
        return web.json_response(row, status=201 if row.get("requests") == 1 else 200)

    return [web.post("/api/callbacks", create),
            web.get("/api/callbacks/queue", queue),
            web.post("/api/callbacks/{callback_id}/cancel", cancel),
            web.post("/api/callbacks/{callback_id}/retry", retry)]


FIELDS = ("phone", "target", "best_time", "held_by", "call_id")
_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_STATUS = ["open", "dialling", "done", "failed", "cancelled", "expired", "merged"]
_CALLBACK: dict[str, Any] = {"type": "object", "properties": {
    "callback_id": {"type": "string"}, "call_id": {"type": "string", "description": "the original call"},
    "phone": {"type": "string"}, "target": {"type": "string", "description": 'agent number, "queue:NAME" or "" (any)'},
    "held_by": {"type": "string", "description": "the agent who held the caller"},
    "at": {"type": "number", "description": "the original call (place in line), epoch s"},
    "best_time": {"type": "string", "description": '"today" or "HH:MM-HH:MM"'},
    "status": {"type": "string", "enum": _STATUS}, "attempts": {"type": "integer"},
    "next_attempt": {"type": ["number", "null"]}, "outcome": {"type": ["string", "null"]},
    "requests": {"type": "integer", "description": "requests merged into this call-back"},
    "place": {"type": "integer", "description": "1 = next in line (queue only)"},
    "agent": {"type": ["string", "null"], "description": "agent of the attempt under way (queue only)"},
    "stage": {"type": ["string", "null"], "description": "stage of the attempt under way (queue only)"},
    "next_attempt_at": {"type": ["number", "null"], "description": "when it can next be placed, inside business "
                        "hours and the caller's window; null: never again (queue only)"}}}
_ID = [{"name": "callback_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _action(summary: str) -> dict[str, Any]:
    return {"post": {"summary": summary, "parameters": _ID, "responses": {
        "200": {"description": "the call-back", "content": {"application/json": {"schema": _CALLBACK}}},
        "400": _ERR, "404": _ERR, "503": _ERR}}}


CALLBACK_OPENAPI: dict[str, Any] = {
    "/api/callbacks": {"post": {
        "summary": "Ask for a call-back: the switch places it (agent first) in the window asked for; "
                   "a second request for the number and target merges into the open one, keeping its place",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["phone"], "additionalProperties": False, "properties": {
                "phone": {"type": "string", "pattern": "^\\+?[0-9]{2,20}$"},
                "target": {"type": "string", "description": 'a configured agent\'s number, "queue:NAME" of a '
                           'queue the switch has, or "" (any agent; the default)'},
                "best_time": {"type": "string", "description": '"asap" (the default; "today" too), "HH:MM-HH:MM" '
                              '(the next such window) or "tomorrow HH:MM-HH:MM"'},
                "held_by": {"type": "string", "description": "the agent preferred (a configured agent's number)"},
                "call_id": {"type": "string", "description": "the call on record this follows (optional)"}}}}}},
        "responses": {
            "201": {"description": "a new call-back", "content": {"application/json": {"schema": _CALLBACK}}},
            "200": {"description": "merged into the open call-back of this number and target",
                    "content": {"application/json": {"schema": _CALLBACK}}},
            "400": _ERR, "503": _ERR}}},
    "/api/callbacks/queue": {"get": {
        "summary": "Open call-backs in their place in line, with the next attempt",
        "responses": {"200": {"description": "call-backs", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"callbacks": {"type": "array", "items": _CALLBACK}}}}}},
            "503": _ERR}}},
    "/api/callbacks/{callback_id}/cancel": _action("Cancel a call-back"),
    "/api/callbacks/{callback_id}/retry": _action("Retry a call-back now (a failed or expired one opens again)"),
}
