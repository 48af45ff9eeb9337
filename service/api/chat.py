"""Routes of the OpenAI-compatible chat API: they translate HTTP; ChatService does the work."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import ChatDep, ClientDep, StateDep, response_owner
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
    chat: ChatDep,
    state: StateDep,
    caller: ClientDep,
    x_request_id: Annotated[str | None, Header()] = None,
    x_ladder_debug: Annotated[str | None, Header()] = None,
    x_ladder_user: Annotated[str | None, Header(max_length=256)] = None,
) -> JSONResponse | StreamingResponse:
    """Answers through the layers of the configuration that `model` names, or through the arm
    of the experiment that captures `model`."""
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
    return JSONResponse(response.model_dump(mode="json", exclude_none=True), headers=headers)


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
