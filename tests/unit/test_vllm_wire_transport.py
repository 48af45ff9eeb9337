"""The vllm engine over its real transport (aiohttp under httpx) against a server on 127.0.0.1:
answers, compressed bodies and failures arrive as they did through httpx's own transport."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Response

from service.engines.base import ChatMessage, GenerationRequest, SamplingParams
from service.engines.vllm import VllmEngine
from service.errors import EngineTimeout, EngineUnavailable
from tests.support.experiments import live_server
from tests.support.fake_upstream import answer, fake_upstream
from tests.support.processes import free_port

PIECES = 4
REQUEST = GenerationRequest((ChatMessage("user", "hi"),), None, SamplingParams(max_tokens=8))


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with live_server(fake_upstream("ok", pieces=PIECES)) as base:
        yield base


def gzipped_upstream() -> FastAPI:
    """Answers every completion with a gzip-encoded body, as a proxy in front of vLLM may."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete() -> Response:
        body = {
            "choices": [{"index": 0, "message": {"content": "zipped"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
        headers = {"content-encoding": "gzip"}
        content = gzip.compress(json.dumps(body).encode())
        return Response(content, media_type="application/json", headers=headers)

    return app


async def _streamed(engine: VllmEngine) -> str:
    try:
        return "".join([delta.text async for delta in engine.stream(REQUEST)])
    finally:
        await engine.aclose()


async def _completed(engine: VllmEngine) -> str:
    try:
        return (await engine.complete(REQUEST)).text
    finally:
        await engine.aclose()


def test_a_completion_and_a_stream_arrive_whole(upstream: str) -> None:
    assert asyncio.run(_completed(VllmEngine(upstream, "base"))) == answer(PIECES)
    assert asyncio.run(_streamed(VllmEngine(upstream, "base"))) == answer(PIECES)


def test_a_compressed_body_is_decoded() -> None:
    with live_server(gzipped_upstream()) as base:
        assert asyncio.run(_completed(VllmEngine(base, "base"))) == "zipped"


def test_an_upstream_nobody_listens_on_is_unavailable() -> None:
    engine = VllmEngine(f"http://127.0.0.1:{free_port()}", "base")
    with pytest.raises(EngineUnavailable, match="cannot be reached"):
        asyncio.run(_completed(engine))


def test_a_stream_that_stalls_times_out() -> None:
    with live_server(fake_upstream("stall", pieces=PIECES)) as base:
        engine = VllmEngine(base, "base", read_timeout_s=0.5)
        with pytest.raises(EngineTimeout, match="did not answer in time"):
            asyncio.run(_streamed(engine))
