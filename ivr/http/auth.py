"""Bearer-token guard for the API and the dashboard.

API clients send ``Authorization: Bearer <token>``. A browser gets the token into an
HttpOnly, SameSite=Strict cookie either through the login form (``/login``) or once
through ``/dashboard?token=...``, which sets the cookie and redirects to the clean URL
(so the token does not stay in the address bar or the history). Paths in
``settings.public`` (by default ``/healthz`` and ``/metrics``) need no token. With no
token configured every guarded path answers 401 ``auth-not-configured``.

Wrong tokens are throttled per client address (:mod:`ivr.http.throttle`: 429 with
``Retry-After``). A token that is not UTF-8 text (in ``Authorization`` or the cookie) or a
login form that cannot be decoded is a 400 naming what is wrong, never a 500.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from ivr.http.keys import SETTINGS, THROTTLE
from ivr.http.throttle import client_key
from ivr.web.errors import BadRequest, TooManyRequests, Unauthorized

COOKIE = "ivr_token"
OPEN_PATHS = ("/login", "/static/")


def _matches(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(token.encode("utf-8", "surrogatepass"),
                                                     given.encode("utf-8", "surrogatepass"))


def _text(value: str, what: str, **where: str) -> str:
    """``value`` if it is UTF-8 text (aiohttp keeps undecodable header bytes as surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"the {what} is not UTF-8 text", error_id="invalid-header", details=where) from None
    return value


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = _text(header, "Authorization header", header="Authorization").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    cookie = request.cookies.get(COOKIE)
    return None if cookie is None else _text(cookie, f"{COOKIE} cookie", header="Cookie", cookie=COOKIE)


def check_throttle(request: web.Request) -> str:
    """The client's throttle key; 429 while it must wait after wrong tokens."""
    key = client_key(request.remote)
    wait = request.app[THROTTLE].retry_after(key)
    if wait:
        raise TooManyRequests(f"too many wrong tokens from this address: try again in {wait} s",
                              retry_after=wait)
    return key


def check_token(request: web.Request, token: str, given: str) -> None:
    """401 for a wrong token (counted for the throttle); 429 while the address waits."""
    key = check_throttle(request)
    if not _matches(token, given):
        request.app[THROTTLE].failed(key)
        raise Unauthorized("wrong token", error_id="invalid-token")
    request.app[THROTTLE].succeeded(key)


def is_public(path: str, public: tuple[str, ...]) -> bool:
    return path in public or any(path.startswith(p) for p in OPEN_PATHS)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if is_public(request.path, settings.public):
        return await handler(request)
    if not settings.token:
        raise Unauthorized("no HTTP token is configured: set IVR_HTTP_TOKEN or [http] token_file",
                           error_id="auth-not-configured")
    query_token = request.query.get("token")
    if query_token is not None and request.method == "GET" and request.path in ("/", "/dashboard"):
        check_token(request, settings.token, query_token)
        return login_redirect(request, settings.token, "/dashboard")
    given = request_token(request)
    if given is None:
        if request.path in ("/", "/dashboard"):  # a person with a browser: the login form
            raise web.HTTPSeeOther("/login")
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)",
                           error_id="missing-token")
    check_token(request, settings.token, given)
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
    if request.content_type != "application/x-www-form-urlencoded":
        raise BadRequest("the sign-in form must be sent as application/x-www-form-urlencoded",
                         error_id="invalid-form", content_type=request.content_type)
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError) as exc:  # not UTF-8, unknown charset
        raise BadRequest(f"the sign-in form cannot be decoded: {exc}", error_id="invalid-form") from None
    given = form.get("token")
    try:
        if settings.token and isinstance(given, str):
            check_token(request, settings.token, given)
            return login_redirect(request, settings.token, "/dashboard")
    except TooManyRequests as exc:
        page = LOGIN_PAGE.format(error=f'<p class="error">Too many wrong tokens: try again in '
                                       f'{exc.retry_after} s.</p>')
        return web.Response(text=page, content_type="text/html", status=429,
                            headers={"Retry-After": str(exc.retry_after)})
    except Unauthorized:
        pass
    page = LOGIN_PAGE.format(error='<p class="error">Wrong token.</p>')
    return web.Response(text=page, content_type="text/html", status=401)


def routes() -> list[web.RouteDef]:
    return [web.get("/login", login_form), web.post("/login", login_submit)]
