"""A fake OpenAI upstream for fault tests, run as its own process so a test can kill it.

`python -m tests.support.fault_upstream --port P --mode ok|error|hang|stall [--pieces N --delay S]`
- ok: /health 200; chat completions as JSON or SSE, `pieces` pieces `delay` seconds apart
- error: every request gets 500 with an OpenAI error body
- hang: accepts connections, reads, never answers
- stall: streams two pieces, then never sends another byte
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

PIECE = "word "


def _chunk(delta: dict[str, str], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    event = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": "base"}
    return f"data: {json.dumps(event | {'choices': [choice]})}\n\n"


def upstream(mode: str, pieces: int, delay: float) -> FastAPI:
    """The fake upstream's app for one mode."""
    app = FastAPI()

    @app.middleware("http")
    async def failing(request: Request, call_next: Any) -> Any:
        if mode == "error":
            body = {"error": {"message": "upstream exploded", "type": "server_error"}}
            return JSONResponse(body, status_code=500)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any]) -> Any:
        if body.get("stream"):
            return StreamingResponse(_events(mode, pieces, delay), media_type="text/event-stream")
        await asyncio.sleep(delay)
        message = {"role": "assistant", "content": PIECE * pieces}
        return {
            "id": "up",
            "object": "chat.completion",
            "created": 0,
            "model": "base",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": pieces, "total_tokens": 5 + pieces},
        }

    return app


async def _events(mode: str, pieces: int, delay: float) -> Any:
    for number in range(pieces):
        if mode == "stall" and number == 2:
            await asyncio.Event().wait()
        yield _chunk({"content": PIECE})
        await asyncio.sleep(delay)
    yield _chunk({}, "stop")
    yield "data: [DONE]\n\n"


async def _hang(port: int) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serves the fake upstream on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["ok", "error", "hang", "stall"], default="ok")
    parser.add_argument("--pieces", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.mode == "hang":
        asyncio.run(_hang(args.port))
        return
    app = upstream(args.mode, args.pieces, args.delay)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
