"""How the evaluation reaches the service: the app in process, or a running server over HTTP."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx

from evaluation.evaluate import Reply
from service.routing.configs import Configuration
from service.settings import Settings


def _reply(body: Mapping[str, Any], latency_s: float) -> Reply:
    usage = body.get("usage") or {}
    ladder = body.get("ladder") or {}
    return Reply(
        text=body["choices"][0]["message"]["content"] or "",
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        few_shot_tokens=int(ladder.get("few_shot_tokens", 0)),
        context_tokens=int(ladder.get("context_tokens", 0)),
        latency_s=latency_s,
        sources=tuple(c["source"] for c in ladder.get("citations", [])),
    )


class _PostingBackend:
    """Posts chat completions with greedy decoding and the run's seed."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        """One chat completion, timed."""
        body = {"model": configuration, "messages": list(messages), "temperature": 0, "seed": seed}
        started = time.perf_counter()
        response = self._client.post("/v1/chat/completions", json=body)
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(
                f"{configuration}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return _reply(response.json(), latency)

    def adapters(self) -> dict[str, str | None]:
        """Each configuration's adapter, as /v1/models reports it."""
        models = self._client.get("/v1/models").json()["data"]
        return {m["id"]: (m.get("metadata") or {}).get("adapter") for m in models}

    def close(self) -> None:
        """Stops the app or closes the connection pool."""
        close = getattr(self._client, "__exit__", None)
        if close is not None:
            close(None, None, None)
        else:
            self._client.close()


def in_process(
    settings: Settings,
    extra: Mapping[str, Configuration] | None = None,
    serve_only: Collection[str] | None = None,
) -> _PostingBackend:
    """The service's own app, lifespan and all, without a socket, serving `serve_only`."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    client = TestClient(
        create_app(settings, extra_configurations=extra, serve_only=serve_only),
        raise_server_exceptions=True,
    )
    client.__enter__()
    return _PostingBackend(client)


def over_http(url: str, timeout_s: float = 600.0) -> _PostingBackend:
    """A running ladder server."""
    return _PostingBackend(httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s))
