"""The fake OpenAI-compatible upstream that tests and benchmarks put behind ladder's vllm engine.

`python -m tests.support.fake_upstream --port P [--mode M] [--pieces N] [--delay S]`, or
`fake_upstream(...)` served in-process. Modes:
- ok: /health 200; /v1/models lists `base`; chat completions whole or streamed (`answer(pieces)`
  in `pieces` chunks `delay` seconds apart, each its own write; a usage chunk when
  `stream_options.include_usage`, as vLLM sends it)
- error: every request gets 500 with an OpenAI error body
- hang: accepts connections, reads, never answers
- stall: streams two pieces, then never sends another byte
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

MODES = ("ok", "error", "hang", "stall")
PIECE = "word "
PROMPT_TOKENS = 7
ERROR = {"error": {"message": "upstream exploded", "type": "server_error"}}


def answer(pieces: int) -> str:
    """The text every completion carries."""
    return PIECE * pieces


def _usage(pieces: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": pieces,
        "total_tokens": PROMPT_TOKENS + pieces,
    }


def _event(model: str, choices: list[dict[str, Any]], **extra: Any) -> str:
    event = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": model}
    return f"data: {json.dumps(event | {'choices': choices} | extra)}\n\n"


async def _events(
    mode: str, model: str, pieces: int, delay: float, usage: bool
) -> AsyncIterator[str]:
    for number in range(pieces):
        if mode == "stall" and number == 2:
            await asyncio.Event().wait()
        yield _event(model, [{"index": 0, "delta": {"content": PIECE}, "finish_reason": None}])
        if delay:
            await asyncio.sleep(delay)
    yield _event(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if usage:
        yield _event(model, [], usage=_usage(pieces))
    yield "data: [DONE]\n\n"


def _completion(model: str, pieces: int) -> bytes:
    message = {"role": "assistant", "content": answer(pieces)}
    body = {
        "id": "up",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": _usage(pieces),
    }
    return json.dumps(body).encode()


def fake_upstream(mode: str = "ok", pieces: int = 3, delay: float = 0.0) -> FastAPI:
    """The app for one mode (hang is a raw socket server: see `main`)."""
    app = FastAPI()
    if mode == "error":

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def explode(path: str) -> JSONResponse:
            return JSONResponse(ERROR, status_code=500)

        return app

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "base", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        # The body is read by hand, not validated: the benchmarks want this peer to cost little.
        body = json.loads(await request.body())
        model = str(body.get("model", "base"))
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _events(mode, model, pieces, delay, usage)
            return StreamingResponse(events, media_type="text/event-stream")
        if delay:
            await asyncio.sleep(delay)
        return Response(_completion(model, pieces), media_type="application/json")

    return app


async def _hang(port: int) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serves the fake upstream on 127.0.0.1 until killed (uvloop and httptools if installed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--pieces", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.mode == "hang":
        asyncio.run(_hang(args.port))
        return
    app = fake_upstream(args.mode, args.pieces, args.delay)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
