"""API error details are data: a detail named like an attribute of the error (``status``,
``error_id``, ``message``) stays a detail (found by mypy strict, issue 15)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.web.errors import BadRequest, error_middleware


def test_details_named_status_or_error_id_stay_details() -> None:
    err = BadRequest("bad id", error_id="invalid-call-id",
                     details={"status": "x", "error_id": "y", "message": "z"})
    assert (err.status, err.error_id, err.message) == (400, "invalid-call-id", "bad id")
    assert err.details == {"status": "x", "error_id": "y", "message": "z"}


async def test_rendered_with_the_details_as_given(aiohttp_client: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise BadRequest("to is before from", details={"from": "2026-12-02", "status": "x"})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/x", handler)
    client = await aiohttp_client(app)
    response = await client.get("/x")
    assert response.status == 400
    assert await response.json() == {"error_id": "invalid-request", "message": "to is before from",
                                     "details": {"from": "2026-12-02", "status": "x"}}
