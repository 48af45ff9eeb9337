"""FastAPI dependencies as Annotated aliases; services are built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Depends, Header, Request

from service.api.guard import same_secret
from service.api.sessions import session_valid
from service.api.state import ServiceState
from service.errors import AuthenticationError, NotFound
from service.experiments.service import ExperimentService


def service_state(request: Request) -> ServiceState:
    """The running service's parts, for a route that reads them without a dependency."""
    state: ServiceState = request.app.state.ladder
    return state


def admitted_caller(request: Request) -> str:
    """The caller ClientAdmission admitted before the body was read."""
    caller: str = request.state.caller
    return caller


# The dependencies are `async def` because none of them waits: FastAPI runs a plain `def`
# dependency in a worker thread, a hop per dependency per request.
async def get_state(request: Request) -> ServiceState:
    """The running service's parts."""
    return service_state(request)


async def get_experiments(request: Request) -> ExperimentService:
    """The experiment service."""
    experiments = service_state(request).experiments
    if experiments is None:
        raise NotFound("experiments are not enabled")
    return experiments


ADMIN_COOKIE = "ladder_admin"


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's X-Forwarded-For already applied by the server)."""
    return request.client.host if request.client else "unknown"


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_ladder_actor: Annotated[str | None, Header(max_length=128)] = None,
    ladder_admin: Annotated[str | None, Cookie()] = None,
) -> str:
    """The actor of an admin request bearing LADDER_ADMIN_TOKEN, or a dashboard session cookie;
    failed attempts count against the client's address."""
    state = service_state(request)
    expected = state.settings.admin_token
    if not expected:
        raise AuthenticationError("a valid admin bearer token is required")
    scheme, _, given = (authorization or "").partition(" ")

    def identify() -> str | None:
        if scheme.lower() == "bearer":
            accepted = same_secret(given.strip(), expected)
        else:
            accepted = ladder_admin is not None and session_valid(ladder_admin, expected)
        return x_ladder_actor or "admin-api" if accepted else None

    refusal = "a valid admin bearer token is required"
    return state.guard.authenticated(client_address(request), identify, refusal)


async def admit_client(request: Request) -> str:
    """The caller of a /v1 route, as ClientAdmission admitted it before the body was read."""
    return admitted_caller(request)


def response_owner(caller: str, user: str | None) -> str:
    """Who may score a response: the API key it was served to; with keys off, the user it was
    served to (OpenAI's `user`, else X-Ladder-User), else the client's address."""
    return f"user:{user}" if user and not caller.startswith("key:") else caller


StateDep = Annotated[ServiceState, Depends(get_state)]
ExperimentsDep = Annotated[ExperimentService, Depends(get_experiments)]
AdminDep = Annotated[str, Depends(require_admin)]
ClientDep = Annotated[str, Depends(admit_client)]
