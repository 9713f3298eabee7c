"""Bearer-token guard for the API and the dashboard.

API clients send ``Authorization: Bearer <token>``. A browser gets the token into an
HttpOnly, SameSite=Strict cookie either through the login form (``/login``) or once
through ``/dashboard?token=...``, which sets the cookie and redirects to the clean URL
(so the token does not stay in the address bar or the history). Paths in
``settings.public`` (by default ``/healthz`` and ``/metrics``) need no token. With no
token configured every guarded path answers 401 ``auth-not-configured``.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from ivr.http.keys import SETTINGS
from ivr.web.errors import Unauthorized

COOKIE = "ivr_token"
OPEN_PATHS = ("/login", "/static/")


def _matches(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(token.encode(), given.encode())


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.cookies.get(COOKIE)


def is_public(path: str, public: tuple[str, ...]) -> bool:
    return path in public or any(path.startswith(p) for p in OPEN_PATHS)


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if is_public(request.path, settings.public):
        return await handler(request)
    if not settings.token:
        raise Unauthorized("no HTTP token is configured: set IVR_HTTP_TOKEN or [http] token_file",
                           error_id="auth-not-configured")
    query_token = request.query.get("token")
    if query_token is not None and request.method == "GET" and request.path in ("/", "/dashboard"):
        if not _matches(settings.token, query_token):
            raise Unauthorized("wrong token", error_id="invalid-token")
        return login_redirect(request, settings.token, "/dashboard")
    given = request_token(request)
    if given is None:
        if request.path in ("/", "/dashboard"):  # a person with a browser: the login form
            raise web.HTTPSeeOther("/login")
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)",
                           error_id="missing-token")
    if not _matches(settings.token, given):
        raise Unauthorized("wrong token", error_id="invalid-token")
    return await handler(request)


def login_redirect(request: web.Request, token: str, to: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": to})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    return response


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>IVR dashboard: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body class="login"><form method="post" action="/login" class="card">
<h1>Call-centre dashboard</h1>{error}
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button></form></body></html>
"""


async def login_form(request: web.Request) -> web.Response:
    return web.Response(text=LOGIN_PAGE.format(error=""), content_type="text/html")


async def login_submit(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    form = await request.post()
    given = form.get("token")
    if settings.token and isinstance(given, str) and _matches(settings.token, given):
        return login_redirect(request, settings.token, "/dashboard")
    page = LOGIN_PAGE.format(error='<p class="error">Wrong token.</p>')
    return web.Response(text=page, content_type="text/html", status=401)


def routes() -> list[web.RouteDef]:
    return [web.get("/login", login_form), web.post("/login", login_submit)]
