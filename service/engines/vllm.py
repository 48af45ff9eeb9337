"""The vLLM engine: OpenAI-compatible HTTP to one vLLM server or several replicas, each through
its own pooled async client (service/engines/vllm_pool.py), routed by adapter affinity."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
from prometheus_client.core import Metric

from service.engines.base import (
    ChatMessage,
    Completion,
    GenerationRequest,
    TextDelta,
    Usage,
)
from service.engines.tokens import estimate_tokens
from service.engines.vllm_adapters import AdapterLost, Resolver
from service.engines.vllm_pool import (
    ExpectedModel,
    Replica,
    ReplicaPool,
    RoutingOptions,
    shared_or_own,
)
from service.engines.vllm_wire import (
    VLLM_CAPABILITIES,
    completion_of,
    finish_reason_of,
    logprobs_of,
    request_body,
    status_error,
    stream_event,
    upstream_message,
    usage_of,
)
from service.errors import EngineError, EngineTimeout, EngineUnavailable, LadderError

__all__ = ["ExpectedModel", "Resolver", "RoutingOptions", "VllmEngine"]
# A replica failure: the replica is marked down, and the request tried once more on another
# replica when nothing of it was streamed yet.
_REPLICA_FAILURES = (EngineUnavailable, EngineTimeout)


class VllmEngine:
    """Sends plans to vLLM; an adapter is chosen by passing its `name@version` as `model`.

    With several URLs, each request goes to one replica (see replicas.py), and a replica failure
    before anything was streamed is retried once on another. With a resolver, adapters are loaded
    into the chosen replica on first use and follow the registry: a bare name means its newest
    version at request time; one the replica lost unseen (a 404) is loaded again, once. With a
    base adapter (the leak guard), base requests go through that zero adapter on every replica,
    so vLLM never batches them as adapter-less next to LoRA requests. With an expected model, a
    replica is not ready while it serves another one. With auto_tool_choice, vLLM runs a
    tool-call parser, so the model may choose whether to call a tool.
    """

    name = "vllm"

    def __init__(
        self,
        base_url: str | Sequence[str],
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
        routing: RoutingOptions | None = None,
    ) -> None:
        self.model = model
        self.capabilities = replace(VLLM_CAPABILITIES, auto_tool_choice=auto_tool_choice)
        self._count = count_tokens
        self._resolver = resolver
        self._base_adapter = base_adapter
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self.pool = ReplicaPool(
            [base_url] if isinstance(base_url, str) else base_url,
            model,
            timeout=timeout,
            transport=shared_or_own(transport, max_connections),
            options=routing or RoutingOptions(),
            expected=expected_model,
            pinned=frozenset({base_adapter[0]}) if base_adapter else frozenset(),
        )
        # A chat request's headers and timeouts are the same every time: merged once.
        self._chat_headers = self.pool.replicas[0].client.headers.copy()
        self._chat_headers["content-type"] = "application/json"
        self._chat_extensions = {"timeout": timeout.as_dict()}

    def _target(self, request: GenerationRequest) -> tuple[str, str, str | None]:
        """(the adapter asked for, the `model` to send, the adapter's folder to load or None)."""
        if request.adapter is None and self._base_adapter is not None:
            return self._base_adapter[0], *self._base_adapter
        if request.adapter is not None and self._resolver is not None:
            return request.adapter, *self._resolver(request.adapter)
        return "", request.adapter or self.model, None

    @asynccontextmanager
    async def _routed(
        self, request: GenerationRequest, tried: list[Replica]
    ) -> AsyncIterator[tuple[Replica, str]]:
        """A replica and the `model` to send it, the adapter loaded there and held throughout."""
        asked, model, path = self._target(request)
        key = model if path is not None else None
        async with self.pool.routed(key, tried) as (replica, _), self._errors():
            held = replica.adapters.use(asked, model, path) if path is not None else nullcontext()
            async with held:
                yield replica, model

    def _refusal(self, response: httpx.Response, request: GenerationRequest) -> LadderError:
        """The error of an upstream status; a 404 for an adapter ladder loaded there means the
        replica lost it (restarted unseen, or another ladder process unloaded it)."""
        if response.status_code == 404 and self._target(request)[2] is not None:
            return AdapterLost(f"vLLM no longer serves the adapter: {upstream_message(response)}")
        return status_error(response)

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as error:
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise EngineTimeout(f"vLLM did not answer in time ({detail})") from error
        except httpx.TransportError as error:
            raise EngineUnavailable(f"vLLM cannot be reached: {error}") from error

    async def _chat(self, replica: Replica, body: dict[str, Any]) -> httpx.Response:
        """Sends a chat completion straight to the replica's transport, its body still to be
        read: the client's redirect, auth, cookie and logging layers have nothing to do for vLLM
        and cost as much CPU as the wire. The body is encoded as httpx's `json=` would."""
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        request = httpx.Request(
            "POST",
            replica.chat_url,
            headers=self._chat_headers,
            content=content.encode(),
            extensions=self._chat_extensions,
        )
        return await replica.transport.handle_async_request(request)

    async def complete(self, request: GenerationRequest) -> Completion:
        """One non-streaming chat completion (tried on a second replica if the first fails)."""
        tried: list[Replica] = []
        reloaded = False
        while True:
            try:
                return await self._complete_on(request, tried)
            except AdapterLost:
                if reloaded:
                    raise
                reloaded, tried = True, []  # any replica may serve it, loading it again
            except _REPLICA_FAILURES:
                if not self.pool.can_retry(tried):
                    raise

    async def _complete_on(self, request: GenerationRequest, tried: list[Replica]) -> Completion:
        async with self._routed(request, tried) as (replica, model):
            response = await self._chat(replica, request_body(request, model, stream=False))
            async with aclosing(response):
                await response.aread()
            if response.status_code != 200:
                raise self._refusal(response, request)
        return completion_of(response)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        """Streams deltas; the last one carries finish_reason and usage. A replica that fails
        before the first delta is replaced once."""
        tried: list[Replica] = []
        reloaded = False
        while True:
            streamed = False
            try:
                async with aclosing(self._stream_on(request, tried)) as deltas:
                    async for delta in deltas:
                        streamed = True
                        yield delta
                return
            except AdapterLost:
                if reloaded:
                    raise
                reloaded, tried = True, []
            except _REPLICA_FAILURES:
                if streamed or not self.pool.can_retry(tried):
                    raise

    async def _stream_on(
        self, request: GenerationRequest, tried: list[Replica]
    ) -> AsyncGenerator[TextDelta, None]:
        finish: str | None = None
        usage = Usage(0, 0)
        async with self._routed(request, tried) as (replica, model):
            response = await self._chat(replica, request_body(request, model, stream=True))
            async with aclosing(response):
                if response.status_code != 200:
                    await response.aread()
                    raise self._refusal(response, request)
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
        """Unloads an adapter version from every replica (each once idle there); True when it
        is gone from all of them now."""
        gone = await self._on_every_replica(lambda replica: replica.adapters.unload(ref))
        return all(gone)

    async def sync(self, names: Iterable[str]) -> list[str]:
        """Loads every named adapter's newest version on every replica (retiring older ones, and
        unloading the least recently used where the slots are full); returns the refs."""
        if self._resolver is None:
            raise EngineError("this vLLM engine has no adapter registry to sync from")
        refs = []
        for name in names:
            ref, path = self._resolver(name)
            await self._on_every_replica(partial(self.pool.load_on, asked=name, ref=ref, path=path))
            refs.append(ref)
        return refs

    async def _on_every_replica(self, action: Callable[[Replica], Any]) -> list[Any]:
        """Runs an admin action on every replica that is up (all of them when none is); one that
        fails is marked down; the action fails only when it failed everywhere."""
        replicas = [r for r in self.pool.replicas if r.state.up] or self.pool.replicas

        async def run(replica: Replica) -> Any:
            try:
                async with self._errors():
                    return await action(replica)
            except _REPLICA_FAILURES as error:
                self.pool.mark_down(replica, str(error))
                raise

        results = await asyncio.gather(*(run(r) for r in replicas), return_exceptions=True)
        answered = [r for r in results if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and (not answered or not isinstance(errors[0], _REPLICA_FAILURES)):
            raise errors[0]
        return answered

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens, by the local tokenizer when one was given."""
        return self._count(messages)

    async def ready(self) -> bool:
        """True when some replica's /health answers 200 and it serves the expected model."""
        return await self.unready_reason() is None

    async def unready_reason(self) -> str | None:
        """Why no replica can take requests now (each one's reason), or None."""
        reasons = await self.pool.check_all()
        if any(reason is None for reason in reasons):
            return None
        if len(reasons) == 1:
            return reasons[0]
        named = zip(self.pool.replicas, reasons, strict=True)
        return "; ".join(f"{replica.url}: {why}" for replica, why in named)

    def replica_report(self) -> list[dict[str, object]]:
        """Each replica's health, routing state and adapters, as of the last readiness check."""
        return self.pool.report()

    def collect(self) -> Iterator[Metric]:
        """Per-replica metrics, for the app's Prometheus registry."""
        yield from self.pool.collect()

    async def aclose(self) -> None:
        """Closes every replica's pooled client."""
        await self.pool.aclose()
