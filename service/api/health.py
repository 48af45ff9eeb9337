"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.deps import StateDep
from service.api.state import ServiceState

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    """The engine and the index can take requests (503 while either cannot)."""
    engine = await state.chat.engine.ready()
    index = state.index is not None and await _index_answers(state)
    status = 200 if engine and index else 503
    return JSONResponse({"ready": status == 200, "engine": engine, "index": index}, status)


async def _index_answers(state: ServiceState) -> bool:
    """The index's heartbeat, bounded by the retrieval timeout (a stalled Chroma is down)."""
    assert state.index is not None
    try:
        beat = asyncio.to_thread(state.index.heartbeat)
        return await asyncio.wait_for(beat, state.settings.retrieval_timeout_s)
    except TimeoutError:
        return False


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    """Prometheus text exposition."""
    return Response(state.chat.metrics.render(), media_type="text/plain; version=0.0.4")
