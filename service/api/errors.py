"""One place that turns every exception into OpenAI's error body and an HTTP status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    EngineOverloaded,
    InvalidRequest,
    LadderError,
    NotFound,
    RateLimited,
    error_body,
)

log = logging.getLogger("ladder.errors")


def error_response(error: LadderError) -> JSONResponse:
    """The JSON response for a ladder error, with Retry-After where it applies."""
    headers = {}
    if isinstance(error, EngineOverloaded | RateLimited):
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error_body(error), status_code=error.status_code, headers=headers)


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    return (f"{param}: {message}" if param else message), param


def install_error_handlers(app: FastAPI) -> None:
    """Maps ladder errors, validation errors, HTTP errors and anything else."""

    @app.exception_handler(LadderError)
    async def _ladder(request: Request, error: LadderError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)
        return error_response(InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            missing = NotFound(f"no route {request.url.path}")
            missing.code = "not_found"
            return error_response(missing)
        failure = LadderError(str(error.detail))
        failure.status_code = error.status_code
        failure.error_type = "invalid_request_error" if error.status_code < 500 else "server_error"
        return error_response(failure)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(LadderError("internal error; see the server log"))
