"""FastAPI dependencies as Annotated aliases; services are built in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from service.api.guard import same_secret
from service.api.state import ServiceState
from service.chat.serving import ChatService
from service.errors import AuthenticationError, NotFound
from service.experiments.service import ExperimentService


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.ladder
    return state


# The dependencies are `async def` because none of them waits: FastAPI runs a plain `def`
# dependency in a worker thread, a hop per dependency per request.
async def get_state(request: Request) -> ServiceState:
    """The running service's parts."""
    return _state(request)


async def get_chat(request: Request) -> ChatService:
    """The chat service."""
    return _state(request).chat


async def get_experiments(request: Request) -> ExperimentService:
    """The experiment service."""
    experiments = _state(request).experiments
    if experiments is None:
        raise NotFound("experiments are not enabled")
    return experiments


ADMIN_COOKIE = "ladder_admin"


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_ladder_actor: Annotated[str | None, Header(max_length=128)] = None,
    ladder_admin: Annotated[str | None, Cookie()] = None,
) -> str:
    """The actor of an admin request bearing LADDER_ADMIN_TOKEN (header or dashboard cookie)."""
    expected = _state(request).settings.admin_token
    scheme, _, given = (authorization or "").partition(" ")
    offered = given.strip() if scheme.lower() == "bearer" else ladder_admin or ""
    if not expected or not same_secret(offered, expected):
        raise AuthenticationError("a valid admin bearer token is required")
    return x_ladder_actor or "admin-api"


async def admit_client(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The caller of a /v1 route, authenticated and rate-limited by the client guard (in a
    worker thread only when the guard does I/O, as the Redis rate limit does)."""
    address = request.client.host if request.client else "unknown"
    guard = _state(request).guard
    if guard.blocking:
        return str(await run_in_threadpool(guard.admit, authorization, address))
    return str(guard.admit(authorization, address))


StateDep = Annotated[ServiceState, Depends(get_state)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
ExperimentsDep = Annotated[ExperimentService, Depends(get_experiments)]
AdminDep = Annotated[str, Depends(require_admin)]
ClientDep = Annotated[str, Depends(admit_client)]
