"""ladder's errors, each mapped once to an HTTP status and OpenAI's error body.

LadderError
 ├── InvalidRequest           400 invalid_request_error
 │    ├── ContextTooLong      400 (the conversation cannot fit the model's window)
 │    ├── InvalidChange       400 (an experiment change refused; the old state keeps serving)
 │    └── UnknownHost         400 (a Host header LADDER_ALLOWED_HOSTS does not name)
 ├── AuthenticationError      401
 ├── PermissionDenied         403 (feedback on a response served to another caller)
 ├── NotFound                 404 (unknown configuration, adapter, experiment)
 │    └── UnknownResponse     404 (feedback for a response no experiment served)
 ├── PayloadTooLarge          413
 ├── RateLimited              429
 ├── HeadersTooLarge          431
 ├── ConfigurationError       start-up error in the configurations file (never served)
 ├── RetrievalError           503 (the index cannot be read)
 ├── StateUnavailable         503 (the experiments database is locked or down)
 └── EngineError              502 (the engine answered with an error)
      ├── EngineOverloaded    503 (queue full; carries retry_after)
      ├── EngineUnavailable   503 (cannot connect)
      └── EngineTimeout       504
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class LadderError(Exception):
    """The root of every error ladder reports to a client."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(LadderError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextTooLong(InvalidRequest):
    code = "context_length_exceeded"


class InvalidChange(InvalidRequest):
    code = "invalid_change"


class UnknownHost(InvalidRequest):
    code = "invalid_host"


class AuthenticationError(LadderError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(LadderError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(LadderError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class UnknownResponse(NotFound):
    code = "response_not_found"


class PayloadTooLarge(LadderError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(LadderError):
    status_code = 431
    error_type = "invalid_request_error"
    code = "request_headers_too_large"


class RateLimited(LadderError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(LadderError):
    """A configurations file that cannot be served; raised at start-up or reload."""

    error_type = "configuration_error"


class RetrievalError(LadderError):
    status_code = 503
    error_type = "service_unavailable"
    code = "retrieval_unavailable"


class StateUnavailable(LadderError):
    status_code = 503
    error_type = "service_unavailable"
    code = "database_unavailable"


class EngineError(LadderError):
    status_code = 502
    error_type = "upstream_error"
    code = "engine_error"


class EngineOverloaded(EngineError):
    status_code = 503
    error_type = "service_unavailable"
    code = "engine_overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailable(EngineError):
    status_code = 503
    error_type = "service_unavailable"
    code = "engine_unavailable"


class EngineTimeout(EngineError):
    status_code = 504
    error_type = "timeout"
    code = "engine_timeout"


def error_body(error: LadderError) -> dict[str, dict[str, str | None]]:
    """OpenAI's error body for an error."""
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


class Invalid(Protocol):
    """A validation error (pydantic's ValidationError) as first_problem reads it."""

    def errors(self) -> Sequence[Mapping[str, object]]: ...


def first_problem(error: Invalid) -> str:
    """A validation error's first problem on one line, `field.path: message` (pydantic's own
    text reports every problem, and every union member, on lines of their own)."""
    first = error.errors()[0]
    location = first["loc"]
    where = ".".join(str(part) for part in location) if isinstance(location, tuple) else ""
    return f"{where}: {first['msg']}" if where else str(first["msg"])
