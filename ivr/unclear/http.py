"""HTTP routes of the unclear-line rule (R3): parse the request, call :class:`UnclearService`.

    POST /api/calls/{call_id}/unclear   {"reason": "faint" | "noisy"}
    DELETE /api/calls/{call_id}/unclear the agent takes the caller back
    GET  /api/unclear                   callers in the unclear-line script now
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.rules.unclear import REASONS
from ivr.unclear.service import UnclearService
from ivr.web.errors import BadRequest
from ivr.web.params import json_body, path_id


def unclear_routes(service: UnclearService) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.Response:
        call_id = path_id(request, "call_id", "call")
        reason = (await json_body(request)).get("reason")
        if reason not in REASONS:
            raise BadRequest('the body needs "reason": "faint" or "noisy"', error_id="bad-reason")
        return web.json_response(await service.start(call_id, reason, "api"), status=202)

    async def take_back(request: web.Request) -> web.Response:
        return web.json_response(await service.take_back(path_id(request, "call_id", "call")))

    async def active(_request: web.Request) -> web.Response:
        return web.json_response({"unclear": service.active()})

    return [web.post("/api/calls/{call_id}/unclear", start),
            web.delete("/api/calls/{call_id}/unclear", take_back), web.get("/api/unclear", active)]


_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_SESSION: dict[str, Any] = {"type": "object", "properties": {
    "call_id": {"type": "string"}, "caller": {"type": "string"}, "agent": {"type": "string"},
    "reason": {"type": "string", "enum": list(REASONS)}, "via": {"type": "string", "enum": ["key", "api", "takeover"]},
    "state": {"type": "string", "description": "idle, ask, pause1, ask-again, pause2, goodbye, pause3"}}}

UNCLEAR_OPENAPI: dict[str, Any] = {
    "/api/calls/{call_id}/unclear": {"post": {
        "summary": "Unclear line (R3): the caller leaves the agent and hears 'sorry, I cannot hear you "
                   "clearly, could you speak a little louder?', again after [unclear] pause s, then the "
                   "goodbye (line too faint or too noisy) and release that pause after it; clear speech at any point "
                   "returns the caller to the agent",
        "parameters": [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "the call's Linkedid (the caller channel's Uniqueid)"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["reason"],
            "properties": {"reason": {"type": "string", "enum": list(REASONS)}}}}}},
        "responses": {"202": {"description": "the script has started", "content": {
            "application/json": {"schema": _SESSION}}}, "400": _ERR, "404": _ERR, "409": _ERR}},
        "delete": {
            "summary": "The agent takes the caller back before the script ends (as the agent's key again)",
            "parameters": [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "the call's Linkedid (the caller channel's Uniqueid)"}],
            "responses": {"200": {"description": "the caller is on the way back", "content": {
                "application/json": {"schema": _SESSION}}}, "404": _ERR, "409": _ERR}}},
    "/api/unclear": {"get": {"summary": "Callers in the unclear-line script now", "responses": {
        "200": {"description": "unclear", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"unclear": {"type": "array", "items": _SESSION}}}}}}}}},
}
