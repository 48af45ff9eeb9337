"""Routes of the OpenAI-compatible chat API: they translate HTTP; ChatService does the work."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from service.api.deps import StateDep, admitted_caller, response_owner, service_state
from service.api.guard import held
from service.chat.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
)

router = APIRouter()
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _correlation_id(given: str | None) -> str | None:
    """The client's X-Request-Id, kept only to correlate; it never becomes the response's id."""
    return given if given and _SAFE_ID.fullmatch(given) else None


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    x_request_id: Annotated[str | None, Header()] = None,
    x_ladder_debug: Annotated[str | None, Header()] = None,
    x_ladder_user: Annotated[str | None, Header(max_length=256)] = None,
) -> Response:
    """Answers through the layers of the configuration that `model` names, or through the arm
    of the experiment that captures `model`."""
    # The service and the caller are read here, not through Depends: each dependency costs
    # FastAPI more CPU per request than this route's own work.
    state, caller = service_state(request), admitted_caller(request)
    chat = state.chat
    correlation_id = _correlation_id(x_request_id)
    debug = x_ladder_debug in ("1", "true")
    owner = response_owner(caller, body.user or x_ladder_user)
    prepared = await chat.prepare(
        body, caller=owner, correlation_id=correlation_id, user_header=x_ladder_user, debug=debug
    )
    request_id = correlation_id or prepared.ticket.id
    headers = {"x-ladder-config": prepared.info.configuration, "x-request-id": request_id}
    if body.stream:
        release = state.guard.stream_slot(caller)
        try:
            events = await chat.open_stream(prepared)
        except BaseException:
            release()
            raise
        stream = held(events, release)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    response = await chat.complete(prepared)
    # Serialised by pydantic-core in one pass: no intermediate dicts, no second encoder.
    content = response.model_dump_json(exclude_none=True)
    return Response(content, media_type="application/json", headers=headers)


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: StateDep) -> ModelList:
    """One entry per configuration, with its layers."""
    configs = state.configs()
    cards = [
        ModelCard(
            id=name,
            created=state.started_at,
            metadata={
                "layers": configuration.layers(),
                "adapter": configuration.adapter,
                "collection": configuration.retrieval.collection
                if configuration.retrieval
                else None,
                "description": configuration.description,
            },
        )
        for name, configuration in sorted(configs.configurations.items())
    ]
    return ModelList(data=cards)
