"""HTTP routes of the call-backs (aiohttp): parse the request, call :class:`CallbackService`.

    GET  /api/callbacks/queue                 open call-backs in line: place, next attempt
    POST /api/callbacks/{callback_id}/cancel  cancel (an agent still deciding is let go)
    POST /api/callbacks/{callback_id}/retry   due now (a failed or expired one opens again)

Every call-back, open or not, with its history: ``GET /api/callbacks`` (the call records).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.callbacks.service import CallbackService
from ivr.web.params import path_id


def callback_routes(service: CallbackService) -> list[web.RouteDef]:
    async def queue(_request: web.Request) -> web.Response:
        return web.json_response({"callbacks": await service.queue()})

    async def cancel(request: web.Request) -> web.Response:
        return web.json_response(await service.cancel(path_id(request, "callback_id", "callback")))

    async def retry(request: web.Request) -> web.Response:
        return web.json_response(await service.retry_now(path_id(request, "callback_id", "callback")))

    return [web.get("/api/callbacks/queue", queue),
            web.post("/api/callbacks/{callback_id}/cancel", cancel),
            web.post("/api/callbacks/{callback_id}/retry", retry)]


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
    "/api/callbacks/queue": {"get": {
        "summary": "Open call-backs in their place in line, with the next attempt",
        "responses": {"200": {"description": "call-backs", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"callbacks": {"type": "array", "items": _CALLBACK}}}}}},
            "503": _ERR}}},
    "/api/callbacks/{callback_id}/cancel": _action("Cancel a call-back"),
    "/api/callbacks/{callback_id}/retry": _action("Retry a call-back now (a failed or expired one opens again)"),
}
