"""HTTP routes of rule R4 (aiohttp): the route handlers parse and call the service.

    app.add_routes(hold_routes(service))

    POST /api/calls/{call_id}/hold     put the call on hold (call id = the caller's Linkedid)
    POST /api/calls/{call_id}/resume   take it off hold (the caller hears the thank-you)
    GET  /api/hold                     calls on hold now
    GET  /api/hold/messages            messages left by held callers
    GET  /api/hold/callbacks           call-back requests
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ivr.errors import IvrError

if TYPE_CHECKING:
    from ivr.hold.service import HoldService


def _error(exc: IvrError) -> web.Response:
    status = int(getattr(exc, "status", 502))  # AMI failures have no status: bad gateway
    return web.json_response({"error_id": exc.error_id, "message": exc.message, "details": exc.details},
                             status=status)


def hold_routes(service: HoldService) -> list[web.RouteDef]:
    async def act(request: web.Request, action: Any) -> web.Response:
        try:
            return web.json_response(await action(request.match_info["call_id"]))
        except IvrError as exc:
            return _error(exc)

    async def hold(request: web.Request) -> web.Response:
        return await act(request, service.hold)

    async def resume(request: web.Request) -> web.Response:
        return await act(request, service.resume)

    async def held(_request: web.Request) -> web.Response:
        return web.json_response(service.held())

    async def messages(_request: web.Request) -> web.Response:
        return web.json_response(service.messages())

    async def callbacks(_request: web.Request) -> web.Response:
        return web.json_response(service.callbacks())

    return [
        web.post("/api/calls/{call_id}/hold", hold),
        web.post("/api/calls/{call_id}/resume", resume),
        web.get("/api/hold", held),
        web.get("/api/hold/messages", messages),
        web.get("/api/hold/callbacks", callbacks),
    ]
