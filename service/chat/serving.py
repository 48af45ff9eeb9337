"""Chat completions: configuration -> retrieval -> plan -> engine -> OpenAI-shaped answer.

A plain class; it never builds an HTTP response. Streams are yielded as SSE `data:` lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from ingest.index import CollectionNotFound, Index, IndexUnavailable, RetrievedPassage
from service.chat.metrics import Metrics
from service.chat.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    Citation,
    DeltaMessage,
    LadderInfo,
    ResponseMessage,
    UsageOut,
)
from service.engines.base import Engine, GenerationRequest, TextDelta, Usage
from service.errors import LadderError, NotFound, PayloadTooLarge, RetrievalError, error_body
from service.routing import plan as router
from service.routing.configs import ConfigSet, Configuration

log = logging.getLogger("ladder.chat")


@dataclass(frozen=True)
class ChatLimits:
    """Request limits (413 beyond them) and the model's window."""

    max_messages: int = 64
    max_message_chars: int = 32_000
    max_total_chars: int = 100_000
    max_tokens_ceiling: int = 2048
    context_window: int = 2048
    retrieval_timeout_s: float = 5.0


@dataclass(frozen=True)
class Prepared:
    """A request that passed every check, with its plan; nothing was generated yet."""

    id: str
    created: int
    request: ChatCompletionRequest
    plan: router.Plan
    info: LadderInfo
    started: float
    marks: dict[str, float] = field(default_factory=dict)


class ChatService:
    """Answers chat requests through the layers their configuration names."""

    def __init__(
        self,
        configs: Callable[[], ConfigSet],
        engine: Engine,
        index: Index | None,
        metrics: Metrics,
        limits: ChatLimits,
    ) -> None:
        self._configs = configs
        self.engine = engine
        self.index = index
        self.metrics = metrics
        self.limits = limits
        self.on_outcome: Callable[[Prepared, str, int, int], None] | None = None

    def configuration(self, name: str) -> Configuration:
        """The configuration a request names, or 404."""
        found = self._configs().get(name)
        if found is None:
            known = ", ".join(sorted(self._configs().configurations))
            raise NotFound(f"unknown configuration {name!r}; known: {known}", param="model")
        return found

    def _check_limits(self, request: ChatCompletionRequest) -> None:
        limits = self.limits
        if len(request.messages) > limits.max_messages:
            raise PayloadTooLarge(f"at most {limits.max_messages} messages", param="messages")
        sizes = [len(str(message.content)) for message in request.messages]
        if max(sizes) > limits.max_message_chars:
            raise PayloadTooLarge(
                f"a message is over {limits.max_message_chars} characters", param="messages"
            )
        if sum(sizes) > limits.max_total_chars:
            raise PayloadTooLarge(
                f"the messages are over {limits.max_total_chars} characters", param="messages"
            )
        limit = request.token_limit()
        if limit is not None and limit > limits.max_tokens_ceiling:
            raise PayloadTooLarge(
                f"max_tokens is over the ceiling of {limits.max_tokens_ceiling}", param="max_tokens"
            )

    async def _retrieve(
        self, configuration: Configuration, query: str
    ) -> tuple[list[RetrievedPassage], str | None]:
        spec = configuration.retrieval
        if spec is None:
            return [], None
        started = time.perf_counter()
        try:
            if self.index is None:
                raise IndexUnavailable("no index is configured")
            search = asyncio.to_thread(
                self.index.search, query, spec.collection, spec.k, None, spec.mode
            )
            passages = await asyncio.wait_for(search, self.limits.retrieval_timeout_s)
        except (IndexUnavailable, CollectionNotFound, TimeoutError) as error:
            reason = str(error) or f"no answer in {self.limits.retrieval_timeout_s} s"
            if spec.on_error == "fail":
                raise RetrievalError(f"retrieval failed: {reason}") from error
            log.warning("answering %s without context: %s", configuration.name, reason)
            return [], "failed"
        finally:
            self.metrics.retrieval.labels(configuration.name).observe(time.perf_counter() - started)
        return passages, "used" if passages else "empty"

    async def prepare(
        self, request: ChatCompletionRequest, request_id: str, configuration: Configuration
    ) -> Prepared:
        """Checks limits, retrieves, and plans; raises a LadderError for a request it refuses."""
        started = time.perf_counter()
        self._check_limits(request)
        query = router.retrieval_query(request)
        passages, retrieval = await self._retrieve(configuration, query)
        plan = router.plan(
            request, configuration, passages, self.engine.count_tokens, self.limits.context_window
        )
        info = LadderInfo(
            configuration=configuration.name,
            layers=list(plan.layers),
            adapter=plan.adapter,
            few_shot_tokens=plan.few_shot_tokens,
            context_tokens=plan.context_tokens,
            retrieval=retrieval if retrieval != "used" or plan.passages else "empty",
            citations=[
                Citation(
                    number=n, source=p.source, chunk_id=p.chunk_id, score=p.score, title=p.title
                )
                for n, p in enumerate(plan.passages, start=1)
            ],
        )
        return Prepared(request_id, int(time.time()), request, plan, info, started)

    def _generation(self, prepared: Prepared) -> GenerationRequest:
        plan = prepared.plan
        return GenerationRequest(plan.messages, plan.adapter, plan.sampling)

    def _observe(self, prepared: Prepared, status: str, prompt: int, completion: int) -> None:
        labels = (prepared.plan.configuration, prepared.plan.adapter or "base")
        self.metrics.requests.labels(*labels, status).inc()
        self.metrics.latency.labels(*labels).observe(time.perf_counter() - prepared.started)
        self.metrics.prompt_tokens.labels(*labels).inc(prompt)
        self.metrics.completion_tokens.labels(*labels).inc(completion)
        if self.on_outcome is not None:
            self.on_outcome(prepared, status, prompt, completion)

    def observe_refusal(self, configuration: str, status: int) -> None:
        """Counts a request refused before generation."""
        self.metrics.requests.labels(configuration, "none", str(status)).inc()

    async def complete(self, prepared: Prepared) -> ChatCompletionResponse:
        """Generates the whole answer."""
        try:
            completion = await self.engine.complete(self._generation(prepared))
        except LadderError as error:
            self._observe(prepared, str(error.status_code), 0, 0)
            raise
        usage = completion.usage
        self._observe(prepared, "200", usage.prompt_tokens, usage.completion_tokens)
        return ChatCompletionResponse(
            id=prepared.id,
            created=prepared.created,
            model=prepared.request.model,
            choices=[
                Choice(
                    message=ResponseMessage(content=completion.text),
                    finish_reason=completion.finish_reason,
                )
            ],
            usage=UsageOut(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
            ),
            ladder=prepared.info,
        )

    def _chunk(self, prepared: Prepared, **fields: object) -> str:
        chunk = ChatCompletionChunk(
            id=prepared.id, created=prepared.created, model=prepared.request.model, **fields
        )
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    async def open_stream(self, prepared: Prepared) -> AsyncIterator[str]:
        """Starts generation and waits for its first piece, so a request the engine refuses
        (queue full, unknown adapter, engine down) fails with its status instead of a 200 stream."""
        deltas = self.engine.stream(self._generation(prepared))
        try:
            first = await anext(deltas)
        except LadderError as error:
            await deltas.aclose()
            self._observe(prepared, str(error.status_code), 0, 0)
            raise
        except StopAsyncIteration:
            first = TextDelta("", "stop", Usage(0, 0))
        prepared.marks["first_token"] = time.perf_counter()
        self.metrics.ttft.labels(
            prepared.plan.configuration, prepared.plan.adapter or "base"
        ).observe(prepared.marks["first_token"] - prepared.started)
        return self._events(prepared, first, deltas)

    async def _events(
        self, prepared: Prepared, first: TextDelta, deltas: AsyncGenerator[TextDelta, None]
    ) -> AsyncIterator[str]:
        """SSE lines in OpenAI's chunk format, ending with `data: [DONE]`, errors included."""
        status, usage = "200", Usage(0, 0)
        role = DeltaMessage(role="assistant", content="")
        yield self._chunk(prepared, choices=[ChunkChoice(delta=role)], ladder=prepared.info)
        try:
            async with aclosing(deltas):
                async for delta in _chain(first, deltas):
                    for line in self._delta_lines(prepared, delta):
                        yield line
                    usage = delta.usage or usage
        except LadderError as error:
            status = str(error.status_code)
            yield f"data: {json.dumps(error_body(error))}\n\n"
        except Exception:
            log.exception("stream %s failed", prepared.id)
            status = "500"
            failure = LadderError("the stream failed; see the server log")
            yield f"data: {json.dumps(error_body(failure))}\n\n"
        finally:
            self._observe(prepared, status, usage.prompt_tokens, usage.completion_tokens)
        yield "data: [DONE]\n\n"

    def _delta_lines(self, prepared: Prepared, delta: TextDelta) -> list[str]:
        """The SSE lines one engine delta becomes."""
        lines = []
        if delta.text:
            content = DeltaMessage(content=delta.text)
            lines.append(self._chunk(prepared, choices=[ChunkChoice(delta=content)]))
        if delta.finish_reason is not None:
            end = ChunkChoice(delta=DeltaMessage(), finish_reason=delta.finish_reason)
            lines.append(self._chunk(prepared, choices=[end]))
            options = prepared.request.stream_options
            if options is not None and options.include_usage:
                usage = delta.usage or Usage(0, 0)
                out = UsageOut(
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens,
                )
                lines.append(self._chunk(prepared, choices=[], usage=out))
        return lines


async def _chain(
    first: TextDelta, rest: AsyncGenerator[TextDelta, None]
) -> AsyncGenerator[TextDelta, None]:
    yield first
    async for delta in rest:
        yield delta
