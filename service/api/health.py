"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Protocol, runtime_checkable

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response

from service.api.deps import StateDep
from service.api.guard import same_secret
from service.api.state import ServiceState
from service.engines.base import Engine
from service.errors import AuthenticationError

router = APIRouter()


@runtime_checkable
class ExplainsReadiness(Protocol):
    """An engine that can say why it is not ready (vLLM down, or serving another model)."""

    async def unready_reason(self) -> str | None:
        """None when the engine can take requests, else why not."""
        ...


@runtime_checkable
class ReportsReplicas(Protocol):
    """An engine of several upstream replicas (vLLM) that reports each one."""

    def replica_report(self) -> list[dict[str, object]]:
        """Each replica's health and routing state, as of the last readiness check."""
        ...


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    """The engine and the index can take requests (503 while either cannot, with the reason)."""
    engine = await _engine_problem(state.chat.engine)
    index = await _index_problem(state)
    problems = [problem for problem in (engine, index) if problem]
    body: dict[str, object] = {"ready": not problems, "engine": not engine, "index": not index}
    if problems:
        body["reason"] = "; ".join(problems)
    if isinstance(state.chat.engine, ReportsReplicas):
        body["replicas"] = state.chat.engine.replica_report()
    return JSONResponse(body, 503 if problems else 200)


async def _engine_problem(engine: Engine) -> str | None:
    if isinstance(engine, ExplainsReadiness):
        return await engine.unready_reason()
    return None if await engine.ready() else f"the {engine.name} engine is not ready"


async def _index_problem(state: ServiceState) -> str | None:
    """The index's heartbeat, bounded by the retrieval timeout (a stalled Chroma is down)."""
    if state.index is None:
        return "no index is open"
    try:
        beat = asyncio.to_thread(state.index.heartbeat)
        answers = await asyncio.wait_for(beat, state.settings.retrieval_timeout_s)
    except TimeoutError:
        answers = False
    return None if answers else "the index does not answer"


@router.get("/metrics")
async def metrics(
    state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus text exposition; with LADDER_METRICS_TOKEN set, for its bearer only."""
    expected = state.settings.metrics_token
    if expected is not None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not same_secret(given.strip(), expected):
            raise AuthenticationError("a valid metrics bearer token is required")
    return Response(state.chat.metrics.render(), media_type="text/plain; version=0.0.4")
