"""How the evaluation reaches the service: the Backend protocol and chat completions over HTTP."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from evaluation.tasks import TaskError


@dataclass(frozen=True)
class Reply:
    """One answer from the service, with what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    few_shot_tokens: int
    context_tokens: int
    latency_s: float
    sources: tuple[str, ...] = ()
    cited: tuple[int, ...] | None = None  # numbers of the sources the answer cites inline


class Backend(Protocol):
    """Sends a conversation to a configuration: in process or over HTTP."""

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        """One chat completion."""
        ...

    def close(self) -> None:
        """Releases the app or the connections."""
        ...


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
        cited=_cited(ladder),
    )


def _cited(ladder: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The numbers of the citations marked cited; None when the configuration asks for none."""
    if ladder.get("unmatched_markers") is None:
        return None
    return tuple(c["number"] for c in ladder.get("citations", []) if c.get("cited"))


class HttpBackend:
    """Posts chat completions (greedy, the run's seed) through a server's or an app's client."""

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
        """Each configuration's adapter, as /v1/models reports it; TaskError when refused."""
        response = self._client.get("/v1/models")
        if response.status_code == 401:
            raise TaskError(
                "the server wants an API key (ladder eval --api-key or LADDER_EVAL_API_KEY):"
                f" {response.text[:300]}"
            )
        if response.status_code != 200:
            raise TaskError(f"/v1/models: HTTP {response.status_code}: {response.text[:300]}")
        models = response.json()["data"]
        return {m["id"]: (m.get("metadata") or {}).get("adapter") for m in models}

    def close(self) -> None:
        """Stops an app in process (its lifespan ends) or closes the connection pool."""
        self._client.__exit__(None, None, None)


def over_http(url: str, api_key: str | None = None, timeout_s: float = 600.0) -> HttpBackend:
    """A running ladder server, called with `Authorization: Bearer <api_key>` when given."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers)
    return HttpBackend(client)
