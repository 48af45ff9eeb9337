"""Thin routes of the OpenAI-compatible API."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import ChatDep, ClientDep, StateDep
from service.api.guard import held
from service.chat.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
)
from service.errors import LadderError
from service.experiments.service import Route
from service.experiments.wiring import observe_refusal

router = APIRouter()
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(given: str | None) -> str:
    return given if given and _SAFE_ID.match(given) else f"chatcmpl-{uuid.uuid4().hex}"


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
    request_id = _request_id(x_request_id)
    started, experiments = time.perf_counter(), state.experiments
    route: Route | None = None
    try:
        if experiments is not None:
            route = await experiments.route(body.model, body.user, x_ladder_user, request_id)
        configuration = chat.configuration(route.configuration if route else body.model)
        prepared = await chat.prepare(body, request_id, configuration)
    except LadderError as error:
        chat.observe_refusal(body.model, error.status_code)
        if experiments is not None and route is not None:
            observe_refusal(experiments, request_id, route, error.status_code, started)
        raise
    if route is not None:
        prepared.info.experiment, prepared.info.arm = route.experiment, route.arm
    if state.settings.debug_prompts and x_ladder_debug in ("1", "true"):
        prompt = [{"role": m.role, "content": m.content} for m in prepared.plan.messages]
        prepared.info.prompt = prompt
    headers = {"x-ladder-config": configuration.name, "x-request-id": request_id}
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
