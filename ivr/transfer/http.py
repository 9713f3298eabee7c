"""HTTP routes of rule R5 (aiohttp): parse the request, call :class:`TransferService`.

    Feature("transfer", ..., http_routes=transfer_routes(service), openapi=TRANSFER_OPENAPI)

    POST /api/calls/{call_id}/transfer   {"target": "1002" | "queue:support" | "number:..."}
    GET  /api/transfers                  transfers in progress
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.transfer.service import TransferService
from ivr.web.errors import BadRequest
from ivr.web.params import json_body, path_id


def transfer_routes(service: TransferService) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.Response:
        call_id = path_id(request, "call_id", "call")
        body = await json_body(request)
        target = body.get("target")
        if not isinstance(target, str) or not target.strip():
            raise BadRequest('the body needs "target": an agent number, "queue:NAME" or "number:DIGITS"',
                             error_id="invalid-transfer-target")
        xfer = await service.transfer(call_id, target)  # IvrError -> the error middleware
        return web.json_response(xfer.as_dict(), status=202)

    async def active(_request: web.Request) -> web.Response:
        return web.json_response({"transfers": [t.as_dict() for t in service.transfers.values()]})

    return [web.post("/api/calls/{call_id}/transfer", start), web.get("/api/transfers", active)]


_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_TRANSFER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "transfer_id": {"type": "string"}, "call_id": {"type": "string"},
        "caller": {"type": "string", "description": "Uniqueid of the caller's channel"},
        "agent": {"type": "string", "description": "number of the transferring agent"},
        "target": {"type": "string"},
        "state": {"type": "string", "enum": ["offered", "ringing", "answered", "confirmed", "completed",
                                             "refused", "timeout", "noanswer", "busy", "hangup",
                                             "returned", "abandoned"]},
        "history": {"type": "array", "items": {"type": "string"}},
    },
}

TRANSFER_OPENAPI: dict[str, Any] = {
    "/api/calls/{call_id}/transfer": {"post": {
        "summary": "Warm transfer (R5): the caller hears why and waits with music; the target must "
                   "press 1 after hearing who is waiting, otherwise the caller returns to the agent "
                   "(or the queue) with an apology",
        "parameters": [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "the call's Linkedid (the caller channel's Uniqueid)"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["target"], "properties": {"target": {
                "type": "string", "description": 'an agent number ("1002"), "queue:NAME" or "number:DIGITS"'}}}}}},
        "responses": {"202": {"description": "transfer started",
                              "content": {"application/json": {"schema": _TRANSFER}}},
                      "400": _ERR, "404": _ERR, "409": _ERR},
    }},
    "/api/transfers": {"get": {
        "summary": "Warm transfers in progress",
        "responses": {"200": {"description": "transfers", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"transfers": {"type": "array", "items": _TRANSFER}}}}}}},
    }},
}
