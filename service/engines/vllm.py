"""The vLLM engine: OpenAI-compatible HTTP to a vLLM server, through one pooled async client."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace
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
from service.engines.transport import AiohttpTransport
from service.engines.vllm_adapters import AdapterSlots, Resolver
from service.engines.vllm_wire import (
    VLLM_CAPABILITIES,
    completion_of,
    finish_reason_of,
    logprobs_of,
    request_body,
    status_error,
    stream_event,
    usage_of,
)
from service.errors import EngineError, EngineTimeout, EngineUnavailable


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


class VllmEngine:
    """Sends plans to a vLLM server; an adapter is chosen by passing its `name@version` as `model`.

    With a resolver, adapters are loaded into vLLM on first use and follow the registry: a bare name
    means its newest version at request time. With a base adapter (the leak guard), base requests go
    through that zero adapter, so vLLM never batches them as adapter-less next to LoRA requests.
    With an expected model, the engine is not ready while vLLM serves another one. With
    auto_tool_choice, vLLM runs a tool-call parser, so the model may choose whether to call a tool.
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
        auto_tool_choice: bool = False,
    ) -> None:
        self.model = model
        self.capabilities = replace(VLLM_CAPABILITIES, auto_tool_choice=auto_tool_choice)
        self._count = count_tokens
        self._resolver = resolver
        self._base_adapter = base_adapter
        self._expected = expected_model
        self._model_matched = False
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._transport = transport or AiohttpTransport(max_connections)
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=self._transport
        )
        # A chat request's URL, headers and timeouts are the same every time: merged once.
        self._chat_url = self.client.build_request("POST", "/v1/chat/completions").url
        self._chat_headers = self.client.headers.copy()
        self._chat_headers["content-type"] = "application/json"
        self._chat_extensions = {"timeout": timeout.as_dict()}
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

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as error:
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise EngineTimeout(f"vLLM did not answer in time ({detail})") from error
        except httpx.TransportError as error:
            raise EngineUnavailable(f"vLLM cannot be reached: {error}") from error

    async def _chat(self, body: dict[str, Any]) -> httpx.Response:
        """Sends a chat completion straight to the transport, its body still to be read: the
        client's redirect, auth, cookie and logging layers have nothing to do for vLLM and cost
        as much CPU as the wire. The body is encoded as httpx's `json=` would."""
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        request = httpx.Request(
            "POST",
            self._chat_url,
            headers=self._chat_headers,
            content=content.encode(),
            extensions=self._chat_extensions,
        )
        return await self._transport.handle_async_request(request)

    async def complete(self, request: GenerationRequest) -> Completion:
        """One non-streaming chat completion."""
        async with self._model_for(request) as model, self._errors():
            response = await self._chat(request_body(request, model, stream=False))
            async with aclosing(response):
                await response.aread()
        if response.status_code != 200:
            raise status_error(response)
        return completion_of(response)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        """Streams deltas; the last one carries finish_reason and usage."""
        finish: str | None = None
        usage = Usage(0, 0)
        async with self._model_for(request) as model, self._errors():
            response = await self._chat(request_body(request, model, stream=True))
            async with aclosing(response):
                if response.status_code != 200:
                    await response.aread()
                    raise status_error(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = stream_event(data)
                    if chunk.get("usage"):
                        usage = usage_of(chunk["usage"])
                    for choice in chunk.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = (choice.get("delta") or {}).get("content") or ""
                        logprobs = logprobs_of(choice.get("logprobs"))
                        if text or logprobs:
                            yield TextDelta(text, logprobs=logprobs)
        if finish is None:
            raise EngineError("vLLM closed the stream before it finished")
        yield TextDelta("", finish_reason_of(finish), usage)

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
