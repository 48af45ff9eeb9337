"""The fake OpenAI-compatible upstream that tests and benchmarks put behind ladder's vllm engine.

`python -m tests.support.fake_upstream --port P [--mode M] [--pieces N] [--delay S] [--lora]`,
or `fake_upstream(...)` served in-process. With `--lora`, vLLM's runtime LoRA routes too: adapters
are loaded and unloaded by name, /v1/models lists them, a chat naming one not loaded gets vLLM's
404, and GET /stats tells what this upstream was asked (chats by model, loads, unloads, and every
one of them in order as `events`). Modes:
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


def fake_upstream(
    mode: str = "ok", pieces: int = 3, delay: float = 0.0, lora: bool = False
) -> FastAPI:
    """The app for one mode (hang is a raw socket server: see `main`)."""
    app = FastAPI()
    loaded: dict[str, str] = {}
    stats: dict[str, Any] = {"chat": {}, "loads": [], "unloads": [], "events": []}
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
        adapters = [{"id": name, "object": "model", "parent": "base"} for name in loaded]
        return {"object": "list", "data": [{"id": "base", "object": "model"}, *adapters]}

    if lora:
        _lora_routes(app, loaded, stats)

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        # The body is read by hand, not validated: the benchmarks want this peer to cost little.
        body = json.loads(await request.body())
        model = str(body.get("model", "base"))
        if lora:
            if model != "base" and model not in loaded:
                error = {"message": f"The model `{model}` does not exist.", "code": 404}
                return JSONResponse({"object": "error", **error}, status_code=404)
            stats["chat"][model] = stats["chat"].get(model, 0) + 1
            stats["events"].append(["chat", model])
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _events(mode, model, pieces, delay, usage)
            return StreamingResponse(events, media_type="text/event-stream")
        if delay:
            await asyncio.sleep(delay)
        return Response(_completion(model, pieces), media_type="application/json")

    return app


def _lora_routes(app: FastAPI, loaded: dict[str, str], stats: dict[str, Any]) -> None:
    """vLLM's runtime adapter routes (VLLM_ALLOW_RUNTIME_LORA_UPDATING) and a /stats of them."""

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request) -> Response:
        body = json.loads(await request.body())
        name = str(body["lora_name"])
        if name in loaded:
            message = f"The lora adapter '{name}' has already been loaded."
            return JSONResponse({"object": "error", "message": message}, status_code=400)
        loaded[name] = str(body["lora_path"])
        stats["loads"].append(name)
        stats["events"].append(["load", name])
        return Response(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request) -> Response:
        name = str(json.loads(await request.body())["lora_name"])
        if loaded.pop(name, None) is None:
            message = f"The lora adapter '{name}' cannot be found."
            return JSONResponse({"object": "error", "message": message}, status_code=404)
        stats["unloads"].append(name)
        stats["events"].append(["unload", name])
        return Response(f"Success: LoRA adapter '{name}' removed successfully.")

    @app.get("/stats")
    async def report() -> dict[str, Any]:
        return stats | {"loaded": list(loaded)}


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
    parser.add_argument("--lora", action="store_true", help="serve vLLM's runtime LoRA routes")
    args = parser.parse_args()
    if args.mode == "hang":
        asyncio.run(_hang(args.port))
        return
    app = fake_upstream(args.mode, args.pieces, args.delay, args.lora)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
