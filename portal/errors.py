"""Error pages for browsers: a person who mistypes an address or follows a stale link gets a page
in their language (404, 403, 500 without a trace); the API and any client that does not ask for
HTML keep the JSON error shape of `core.errors`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import AppError
from core.i18n import N_, translator
from portal.layout import ShowPage, current, page_locale, render

Handler = Callable[[Request, Any], Awaitable[Response]]

PAGES = {
    401: (N_("Please sign in"), N_("This page needs you to be signed in.")),
    403: (N_("Not allowed"), N_("You may not open this page.")),
    404: (N_("Page not found"), N_("There is nothing at this address. Check it, or start again from the home page.")),
    405: (N_("Page not found"), N_("There is nothing at this address. Check it, or start again from the home page.")),
    409: (N_("Not possible now"), N_("This was changed meanwhile. Go back and try again.")),
    422: (N_("Not possible"), N_("Something in the request is not valid. Go back and try again.")),
    429: (N_("Too many attempts"), N_("Wait a little, then try again.")),
    500: (N_("Something went wrong"), N_("The error is recorded. Try again in a moment.")),
    503: (N_("Busy"), N_("The service is busy. Try again in a moment.")),
}


def wants_html(request: Request) -> bool:
    """A browser's page request: not the API, and HTML accepted by name (a bare */* is a client)."""
    path = request.url.path
    if path.startswith("/api/") or path in ("/openapi.json", "/healthz", "/readyz"):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int) -> Response:
    heading, detail = PAGES.get(status, PAGES[500] if status >= 500 else PAGES[422])
    engine = getattr(request.app.state, "engine", None)
    principal = current(request, engine) if engine is not None and status != 500 else None
    t = translator(page_locale(request, principal))
    return render(request, "error.html", principal, status=status, heading=t(heading), detail=t(detail))


def install(app: FastAPI) -> None:
    """Wrap the JSON error handlers `core.errors.install_error_handlers` put on `app` (call after
    it): HTML for browsers, the same JSON for everything else. And `ShowPage`: a page's own answer
    after a refusal, its unit of work rolled back."""
    handlers: dict[Any, Handler] = app.exception_handlers  # type: ignore[assignment]

    def html_or(json_handler: Handler, status_of: Callable[[Any], int]) -> Handler:
        async def handle(request: Request, exc: Any) -> Response:
            if wants_html(request):
                try:
                    return error_page(request, status_of(exc))
                except Exception:  # an error page must never fail in turn
                    return await json_handler(request, exc)
            return await json_handler(request, exc)

        return handle

    for exc_type, status_of in (
        (StarletteHTTPException, lambda e: e.status_code),
        (AppError, lambda e: e.status),
        (Exception, lambda e: 500),
    ):
        if exc_type in handlers:
            app.add_exception_handler(exc_type, html_or(handlers[exc_type], status_of))

    async def show_page(_request: Request, exc: ShowPage) -> Response:
        return exc.response

    app.add_exception_handler(ShowPage, show_page)  # type: ignore[arg-type]
