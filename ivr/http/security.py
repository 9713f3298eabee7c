"""Security headers on every response of the HTTP server (API, dashboard, errors, files).

The dashboard is one page with its script and style sheet under ``/static`` (no inline
script or style, no other origin), a ``fetch`` of ``/api/dashboard`` and an
``EventSource`` on ``/api/events``; its chart is SVG built in the DOM. So the policy
allows only this origin, for exactly those kinds, and nothing may frame the page.
"""

from __future__ import annotations

from aiohttp import web

CSP = (
    "default-src 'none'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self'; "  # nothing but the browser's own favicon request
    "connect-src 'self'; "  # fetch /api/dashboard, EventSource /api/events
    "form-action 'self'; "  # the sign-in form posts to /login
    "base-uri 'none'; "
    "frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: runs for every response, streamed ones and errors too."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"  # call data stays out of caches
