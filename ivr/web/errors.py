"""API errors: a stable ``error_id``, a message and details, rendered by one middleware as
``{"error_id": ..., "message": ..., "details": {...}}`` (wazo-calld style)."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from ivr.ami.connection import AmiError
from ivr.errors import IvrError

log = structlog.get_logger("ivr.http")

# The app's request body limit, for the 413 details (set by whoever builds the app).
CLIENT_MAX_SIZE: web.AppKey[int] = web.AppKey("client_max_size", int)


class ApiError(IvrError):
    status = 400
    error_id = "bad-request"

    def __init__(self, message: str, *, status: int | None = None, error_id: str | None = None,
                 details: dict[str, Any] | None = None, **named: Any) -> None:
        # Details whose names are data (a path parameter, a query key) come in ``details``:
        # as keywords they could collide with ``status``, ``error_id`` or ``message``.
        super().__init__(message)
        self.details = {**(details or {}), **named}
        if status is not None:
            self.status = status
        if error_id is not None:
            self.error_id = error_id


class BadRequest(ApiError):
    status, error_id = 400, "invalid-request"


class Unauthorized(ApiError):
    status, error_id = 401, "unauthorized"


class NotFound(ApiError):
    status, error_id = 404, "not-found"


class TooManyRequests(ApiError):
    status, error_id = 429, "too-many-attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class Unavailable(ApiError):
    status, error_id = 503, "unavailable"


# aiohttp's own HTTP errors (no route, wrong method, body too large) in the same shape.
_HTTP_IDS = {
    404: ("not-found", "no such resource"),
    405: ("method-not-allowed", "method not allowed on this resource"),
    413: ("body-too-large", "the request body is too large"),
}


def error_body(error_id: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error_id": error_id, "message": message, "details": details or {}}


def error_response(status: int, error_id: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(error_id, message, details), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="ivr"'} if exc.status == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.error_id, exc.message, exc.details, headers)
    except IvrError as exc:  # a service refused (switch unreachable, bad state, ...)
        status = exc.http_status
        if status is None or not 400 <= status <= 599:
            status = 502 if isinstance(exc, AmiError) else 409  # the switch failed / the call's state
        return error_response(status, exc.error_id, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error_id, message = _HTTP_IDS.get(exc.status, (f"http-{exc.status}", exc.reason))
        details: dict[str, Any] = {"path": request.path}
        if exc.status == 413:
            details["max_bytes"] = request.app.get(CLIENT_MAX_SIZE)
        if exc.status == 405:
            details["method"] = request.method
        return error_response(exc.status, error_id, message, details)
    except Exception:
        log.exception("http.handler_failed", path=request.path, method=request.method)
        return error_response(500, "internal-error", "the controller failed to handle this request",
                              {"path": request.path})
