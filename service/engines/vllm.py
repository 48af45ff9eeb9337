"""The vLLM engine: OpenAI-compatible HTTP to a vLLM server, through one pooled async client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from service.engines.base import (
    ChatMessage,
    Completion,
    GenerationRequest,
    TextDelta,
    Usage,
)
from service.engines.tokens import estimate_tokens
from service.errors import (
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    LadderError,
)

log = logging.getLogger("ladder.vllm")


def _message_of(body: Any) -> str:
    """The message of an OpenAI `{"error": {...}}` or a vLLM `{"object": "error"}` body."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:500]
    return str(error)[:500]


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    return _message_of(body)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage(0, 0)
    return Usage(raw.get("prompt_tokens") or 0, raw.get("completion_tokens") or 0)


def _stream_event(data: str) -> dict[str, Any]:
    """One SSE event's JSON; EngineError when it cannot be read or reports a failure."""
    try:
        event = json.loads(data)
    except ValueError as error:
        raise EngineError(f"vLLM sent an unreadable stream event: {data[:200]!r}") from error
    if not isinstance(event, dict):
        raise EngineError(f"vLLM sent an unreadable stream event: {data[:200]!r}")
    if "error" in event or event.get("object") == "error":
        raise EngineError(f"vLLM failed mid-stream: {_message_of(event)}")
    return event


def _status_error(response: httpx.Response) -> LadderError:
    """Translates an upstream error status, keeping the upstream's message."""
    message = f"vLLM answered {response.status_code}: {_upstream_message(response)}"
    if response.status_code in (400, 422):
        return InvalidRequest(message)
    if response.status_code == 429:
        return EngineOverloaded(message, retry_after=1.0)
    if response.status_code == 503:
        return EngineUnavailable(message)
    if response.status_code == 504:
        return EngineTimeout(message)
    return EngineError(message)


Resolver = Callable[[str], tuple[str, str]]
"""An adapter ref (`name` or `name@version`) -> (its exact `name@version`, its folder)."""


@dataclass(frozen=True)
class ExpectedModel:
    """The base model ladder is configured for: its source, prepared folder and window."""

    source: str
    folder: str
    window: int

    def mismatch(self, served: Mapping[str, Any] | None, name: str) -> str | None:
        """Why vLLM's /v1/models entry for the served name is not this model, or None. A field
        vLLM leaves out is not compared; a longer vLLM window is fine (ladder budgets within it)."""
        if served is None:
            return f"vLLM serves no model named {name!r}"
        root, length = served.get("root"), served.get("max_model_len")
        names = {self.source.rstrip("/"), self.folder.rstrip("/")}
        if (root is None or str(root).rstrip("/") in names) and (
            not isinstance(length, int) or length >= self.window
        ):
            return None
        configured = self.source if self.source == self.folder else f"{self.source} ({self.folder})"
        return (
            f"vLLM serves {root} with max_model_len {length}, ladder is configured for"
            f" {configured} with window {self.window}"
        )


class AdapterSlots:
    """vLLM's loaded adapters kept in step with the registry.

    A ref is loaded once (one lock per ref, so concurrent requests wait for the same load) and
    counted while requests use it; a version superseded by a newer one is unloaded once idle.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._seeded = asyncio.Lock()
        self._loaded: set[str] | None = None
        self._in_flight: Counter[str] = Counter()
        self._stale: set[str] = set()
        self._pinned: set[str] = set()

    @asynccontextmanager
    async def use(self, asked: str, ref: str, path: str) -> AsyncIterator[None]:
        """Keeps ref loaded while the body runs; asking by bare name retires older versions."""
        loaded = await self._seed()
        self._note(asked, ref, loaded)
        async with self._locks[ref]:
            if ref not in loaded:
                await self._load(ref, path)
                loaded.add(ref)
            self._in_flight[ref] += 1
        try:
            yield
        finally:
            self._in_flight[ref] -= 1
            try:
                await self.retire_idle()
            except (LadderError, httpx.HTTPError) as error:  # the answer stands; retried later
                log.warning("retiring superseded adapters failed: %s", error)

    async def unload(self, ref: str) -> bool:
        """Unloads ref now when idle, else when its last request ends; True if gone now."""
        loaded = await self._seed()
        loaded.add(ref)  # vLLM may hold it from its start-up list, unknown to this process
        self._pinned.discard(ref)
        self._stale.add(ref)
        await self.retire_idle()
        return ref not in loaded

    async def retire_idle(self) -> None:
        """Unloads every superseded ref no request uses."""
        loaded = await self._seed()
        for ref in sorted(self._stale):
            async with self._locks[ref]:
                if self._in_flight[ref] or ref not in self._stale:
                    continue
                if ref in loaded:
                    await self._unload(ref)
                    loaded.discard(ref)
                self._stale.discard(ref)

    def _note(self, asked: str, ref: str, loaded: set[str]) -> None:
        """Marks the versions a bare name no longer resolves to as stale."""
        if "@" in asked:
            self._pinned.add(ref)
            self._stale.discard(ref)
            return
        prefix = ref.split("@")[0] + "@"
        self._stale.discard(ref)
        for other in loaded:
            if other.startswith(prefix) and other != ref and other not in self._pinned:
                self._stale.add(other)

    async def _seed(self) -> set[str]:
        """What vLLM serves, read once from /v1/models (start-up adapters included)."""
        async with self._seeded:
            if self._loaded is None:
                response = await self._client.get("/v1/models")
                if response.status_code != 200:
                    raise _status_error(response)
                self._loaded = {str(m.get("id")) for m in response.json().get("data") or []}
            return self._loaded

    async def _load(self, ref: str, path: str) -> None:
        body = {"lora_name": ref, "lora_path": path}
        response = await self._client.post("/v1/load_lora_adapter", json=body)
        loaded_before = response.status_code == 400 and "already been loaded" in response.text
        if response.status_code != 200 and not loaded_before:
            message = _upstream_message(response)
            raise EngineError(f"vLLM could not load adapter {ref}: {message}")

    async def _unload(self, ref: str) -> None:
        response = await self._client.post("/v1/unload_lora_adapter", json={"lora_name": ref})
        if response.status_code not in (200, 404):  # 404: vLLM no longer has it either way
            message = _upstream_message(response)
            raise EngineError(f"vLLM could not unload adapter {ref}: {message}")


class VllmEngine:
    """Sends plans to a vLLM server; an adapter is chosen by passing its `name@version` as `model`.

    With a resolver, adapters are loaded into vLLM on first use and follow the registry: a bare name
    means its newest version at request time. With a base adapter (the leak guard), base requests go
    through that zero adapter, so vLLM never batches them as adapter-less next to LoRA requests.
    With an expected model, the engine is not ready while vLLM serves another one.
    """

    name = "vllm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        max_connections: int = 256,
        count_tokens: Callable[[Sequence[ChatMessage]], int] = estimate_tokens,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
        base_adapter: tuple[str, str] | None = None,
        expected_model: ExpectedModel | None = None,
    ) -> None:
        self.model = model
        self._count = count_tokens
        self._resolver = resolver
        self._base_adapter = base_adapter
        self._expected = expected_model
        self._model_matched = False
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=64)
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, limits=limits, transport=transport
        )
        self.adapters = AdapterSlots(self.client)

    @asynccontextmanager
    async def _model_for(self, request: GenerationRequest) -> AsyncIterator[str]:
        """The `model` to send, with its adapter loaded and held for the request's duration."""
        if request.adapter is None and self._base_adapter is not None:
            asked, (ref, path) = self._base_adapter[0], self._base_adapter
        elif request.adapter is not None and self._resolver is not None:
            asked, (ref, path) = request.adapter, self._resolver(request.adapter)
        else:
            yield request.adapter or self.model
            return
        async with self._errors(), self.adapters.use(asked, ref, path):
            yield ref

    def _body(self, request: GenerationRequest, model: str, stream: bool) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "stream": stream,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as error:
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise EngineTimeout(f"vLLM did not answer in time ({detail})") from error
        except httpx.TransportError as error:
            raise EngineUnavailable(f"vLLM cannot be reached: {error}") from error

    async def complete(self, request: GenerationRequest) -> Completion:
        """One non-streaming chat completion."""
        async with self._model_for(request) as model, self._errors():
            response = await self.client.post(
                "/v1/chat/completions", json=self._body(request, model, False)
            )
        if response.status_code != 200:
            raise _status_error(response)
        try:
            body = response.json()
            choice = body["choices"][0]
            return Completion(
                text=choice["message"]["content"] or "",
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                usage=_usage(body.get("usage")),
            )
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise EngineError(f"vLLM sent an unreadable completion: {error}") from error

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        """Streams deltas; the last one carries finish_reason and usage."""
        finish: str | None = None
        usage = Usage(0, 0)
        async with self._model_for(request) as model, self._errors():
            body = self._body(request, model, True)
            async with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _status_error(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = _stream_event(data)
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    for choice in chunk.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield TextDelta(text)
        if finish is None:
            raise EngineError("vLLM closed the stream before it finished")
        yield TextDelta("", "length" if finish == "length" else "stop", usage)

    async def unload(self, ref: str) -> bool:
        """Unloads an adapter version from vLLM (once idle); True when it is gone now."""
        async with self._errors():
            return await self.adapters.unload(ref)

    async def sync(self, names: Iterable[str]) -> list[str]:
        """Loads every named adapter's newest version (retiring older ones); returns the refs."""
        if self._resolver is None:
            raise EngineError("this vLLM engine has no adapter registry to sync from")
        refs = []
        for name in names:
            ref, path = self._resolver(name)
            async with self._errors(), self.adapters.use(name, ref, path):
                refs.append(ref)
        return refs

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens, by the local tokenizer when one was given."""
        return self._count(messages)

    async def ready(self) -> bool:
        """True when vLLM's /health answers 200 and it serves the expected model."""
        return await self.unready_reason() is None

    async def unready_reason(self) -> str | None:
        """Why vLLM cannot take requests now, or None. A served model that matched is not asked
        again until /health fails (a restart may bring another model)."""
        try:
            response = await self.client.get("/health", timeout=2.0)
        except httpx.HTTPError as error:
            self._model_matched = False
            return f"vLLM cannot be reached: {type(error).__name__} {error}".rstrip()
        if response.status_code != 200:
            self._model_matched = False
            return f"vLLM's /health answered {response.status_code}"
        if self._expected is None or self._model_matched:
            return None
        reason = await self._served_model_mismatch(self._expected)
        self._model_matched = reason is None
        return reason

    async def _served_model_mismatch(self, expected: ExpectedModel) -> str | None:
        """Compares vLLM's /v1/models entry for the served name with the expected model."""
        try:
            response = await self.client.get("/v1/models", timeout=2.0)
            listed = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            return f"vLLM's /v1/models could not be read: {type(error).__name__} {error}".rstrip()
        if not isinstance(listed, list):
            return f"vLLM's /v1/models answered {response.status_code} without a model list"
        served = [m for m in listed if isinstance(m, dict) and m.get("id") == self.model]
        return expected.mismatch(served[0] if served else None, self.model)

    async def aclose(self) -> None:
        """Closes the pooled client."""
        await self.client.aclose()
