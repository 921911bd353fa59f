"""One error shape for the whole API: {"code", "message", "errors": [{"field", "code", "message"}]}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("bookgate")


class AppError(Exception):
    """A refusal with a machine-readable code; raised by services, rendered by the API.

    A refusal rolls the request's unit of work back, unless it is raised with ``keep=True``: for
    refusals that must leave a trace (a request voided because its booking changed meanwhile)."""

    status = 400
    keep = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        keep: bool = False,
        **extra: Any,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.keep = keep
        if status is not None:
            self.status = status
        self.field = field
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, **self.extra}
        if self.field:
            body["errors"] = [{"field": self.field, "code": self.code, "message": self.message}]
        return body


class NotFound(AppError):
    status = 404


class Forbidden(AppError):
    status = 403


class Conflict(AppError):
    status = 409


class Invalid(AppError):
    status = 422


class Unauthorized(AppError):
    status = 401


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ErrorDetail(BaseModel):
    field: str
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every refusal has this shape."""

    code: str
    message: str
    errors: list[ErrorDetail] = []


# Declared on every API router (bookgate.app), so the OpenAPI document says what clients may get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad request"),
        (401, "Not signed in, or the session or key is no longer valid"),
        (403, "Signed in, but not allowed"),
        (404, "Not found, or not visible to the caller"),
        (405, "Method not allowed on this path"),
        (409, "Conflict with the current state (slot taken, already decided...)"),
        (413, "Body too large"),
        (422, "Invalid input, with the fields at fault"),
        (429, "Too many attempts"),
        (503, "Busy: try again"),
    )
}


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie", "form"):
        parts = parts[1:] or parts
    return ".".join(str(p) for p in parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    def _invalid(exc: RequestValidationError | ValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field(tuple(err.get("loc", ()))),
                "code": err.get("type", "invalid"),
                "message": str(err.get("msg", "invalid value")).removeprefix("Value error, "),
            }
            for err in exc.errors()
        ]
        return JSONResponse(
            {"code": "validation_error", "message": "the request is not valid", "errors": errors},
            status_code=422,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc)

    # A model a service builds from the client's values (a duplicate's copy of a booking, rules
    # merged with a change) that turns out invalid is the client's input too: 422, never a 500.
    @app.exception_handler(ValidationError)
    async def _inner_validation(_request: Request, exc: ValidationError) -> JSONResponse:
        return _invalid(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse(
            {"code": code, "message": message},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # Values the database or the calendar cannot hold (an id over 2^63-1, the year 10000 reached by
    # date arithmetic): the client's input, so a 422, never a 500. Routes should bound their inputs;
    # this is the net under them.
    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, exc: OverflowError) -> JSONResponse:
        return JSONResponse(
            {"code": "out_of_range", "message": "a value is out of the range this service handles"}, 422
        )

    @app.exception_handler(DataError)
    async def _data(_request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"code": "out_of_range", "message": "a value does not fit what the database stores"}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"code": "internal_error", "message": "an unexpected error occurred"}, status_code=500)
