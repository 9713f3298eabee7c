"""HTTP routes of rule R4 (aiohttp): parse the request, call :class:`HoldService`;
errors (``IvrError``) are rendered by the server's error middleware.

    Feature("hold", ..., http_routes=hold_routes(service), openapi=HOLD_OPENAPI)

    POST /api/calls/{call_id}/hold     put the call on hold (call id = the caller's Linkedid)
    POST /api/calls/{call_id}/resume   take it off hold (the caller hears the thank-you first)
    GET  /api/hold                     calls on hold now

Messages left by held callers (choice 2) are the call records': ``/api/messages`` (the
one store; ``/api/hold/messages``, which read JSON files beside the recordings, is gone:
not redirected, because its answer had other field names (``id``, ``caller``, ``file``)
and a redirect would hand an old client rows it cannot read without telling it; a 404 does).
Call-back requests (choice 3) are call-backs: ``/api/callbacks`` (the call records).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.hold.service import HoldService
from ivr.rules.hold import HOLD_VIAS
from ivr.web.params import path_id


def hold_routes(service: HoldService) -> list[web.RouteDef]:
    async def hold(request: web.Request) -> web.Response:
        return web.json_response(await service.hold(path_id(request, "call_id", "call")))

    async def resume(request: web.Request) -> web.Response:
        return web.json_response(await service.resume(path_id(request, "call_id", "call")))

    async def held(_request: web.Request) -> web.Response:
        return web.json_response({"held": service.held()})

    return [
        web.post("/api/calls/{call_id}/hold", hold),
        web.post("/api/calls/{call_id}/resume", resume),
        web.get("/api/hold", held),
    ]


_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_CALL_ID = [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "the call's Linkedid (the caller channel's Uniqueid)"}]
_HELD: dict[str, Any] = {"type": "object", "properties": {
    "call_id": {"type": "string"}, "caller": {"type": "string"}, "agent": {"type": "string"},
    "via": {"type": "string", "enum": list(HOLD_VIAS), "description": "what started it (takeover: a hold rebuilt "
            "from an earlier version's stage, which did not keep it)"},
    "state": {"type": "string"}, "count": {"type": "integer"}, "held_seconds": {"type": "number"},
    "choice": {"type": ["string", "null"], "enum": ["keep", None],
               "description": "keep once the caller pressed 1 at the choices (2 and 3 end the hold)"}}}


def _list(key: str, item: dict[str, Any], summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": {"description": key, "content": {
        "application/json": {"schema": {"type": "object", "properties": {
            key: {"type": "array", "items": item}}}}}}}}}


def _action(summary: str) -> dict[str, Any]:
    return {"post": {"summary": summary, "parameters": _CALL_ID, "responses": {
        "200": {"description": "the held call", "content": {"application/json": {"schema": _HELD}}},
        "400": _ERR, "404": _ERR, "409": _ERR, "502": _ERR}}}


HOLD_OPENAPI: dict[str, Any] = {
    "/api/calls/{call_id}/hold": _action(
        "Hold (R4): the caller hears music, a reminder every [hold] reminder_interval s and the choices "
        "after [hold] choices_after s"),
    "/api/calls/{call_id}/resume": _action("Resume: the caller hears the thank-you, then the agent"),
    "/api/hold": _list("held", _HELD, "Calls on hold now"),
}
