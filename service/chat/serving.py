"""Chat completions: experiment -> configuration -> retrieval -> plan -> engine -> OpenAI answer.

A plain class; it never builds an HTTP response. Streams are yielded as SSE `data:` lines. Every
request it takes ends in one call of `observe()`: answered, failed in the engine, or refused
before generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from functools import partial

from ingest.index import CollectionNotFound, Index, IndexUnavailable
from ingest.passage import RetrievedPassage
from service.chat.citations import with_cited
from service.chat.examples import ExampleSelector, bundled_embedder
from service.chat.limits import ChatLimits, response_id
from service.chat.metrics import UNKNOWN_MODEL, Metrics
from service.chat.parameters import check_forced_tool_call, check_parameters
from service.chat.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    Citation,
    LadderInfo,
)
from service.chat.response_format import requested_output
from service.chat.responses import choices_of
from service.chat.streaming import DONE, ChunkWriter, chained, error_line, usage_out
from service.engines.base import Engine, GenerationRequest, TextDelta, Usage
from service.errors import InvalidRequest, LadderError, NotFound, PayloadTooLarge, RetrievalError
from service.experiments.service import ExperimentService, Route
from service.experiments.traffic import ArmOutcome
from service.messages import ChatMessage, SamplingRequest
from service.routing import plan as router
from service.routing.budget import TokenParts
from service.routing.configs import ConfigSet, Configuration, FewShotExample

log = logging.getLogger("ladder.chat")

INLINE_PLAN_CHARS = 2_000
"""A prompt this short is planned on the event loop: counting it costs well under 1 ms (SmolLM2's
tokenizer: ~0.2 ms a thousand characters, segments cached), less than a hop to a thread."""


@dataclass
class Ticket:
    """A request from its arrival on: what `observe()` needs to record how it ended."""

    id: str
    model: str
    route: Route | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None


@dataclass(frozen=True)
class Prepared:
    """A request that passed every check, with its plan; nothing was generated yet."""

    ticket: Ticket
    created: int
    request: ChatCompletionRequest
    plan: router.Plan
    info: LadderInfo


class ChatService:
    """Answers chat requests through the layers their configuration names, or through the arm
    of the experiment that captures the model they name."""

    def __init__(
        self,
        configs: Callable[[], ConfigSet],
        engine: Engine,
        index: Index | None,
        metrics: Metrics,
        limits: ChatLimits,
        *,
        experiments: ExperimentService | None = None,
        examples: ExampleSelector | None = None,
        debug_prompts: bool = False,
    ) -> None:
        self._configs = configs
        self.engine = engine
        self.index = index
        self.metrics = metrics
        self.limits = limits
        self.experiments = experiments
        self.examples = examples or ExampleSelector(bundled_embedder(index, threads=1))
        self.debug_prompts = debug_prompts
        self.token_parts = TokenParts(engine.count_tokens, limits.token_count_cache)
        self._planning = ThreadPoolExecutor(2, thread_name_prefix="ladder-plan")

    def _configuration(self, name: str) -> Configuration:
        """The configuration a request names, or 404."""
        found = self._configs().get(name)
        if found is None:
            known = ", ".join(sorted(self._configs().configurations))
            raise NotFound(f"unknown configuration {name!r}; known: {known}", param="model")
        return found

    def _check_limits(self, request: ChatCompletionRequest) -> None:
        limits = self.limits
        engine = self.engine
        check_parameters(request, engine.capabilities, engine.name, limits.max_n)
        if len(request.messages) > limits.max_messages:
            raise PayloadTooLarge(f"at most {limits.max_messages} messages", param="messages")
        sizes = [len(message.text()) for message in request.messages]
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
            field = request.token_limit_field()
            raise InvalidRequest(
                f"{field} is {limit}, over the ceiling of {limits.max_tokens_ceiling}", param=field
            )

    def _retrieve(
        self, configuration: Configuration, query: str
    ) -> tuple[list[RetrievedPassage], str | None]:
        spec = configuration.retrieval
        if spec is None:
            return [], None
        started = time.perf_counter()
        try:
            if self.index is None:
                raise IndexUnavailable("no index is configured")
            passages = self.index.search(query, spec.collection, spec.k, None, spec.mode)
        except (IndexUnavailable, CollectionNotFound) as error:
            return [], self._without_context(configuration, str(error), error)
        finally:
            self.metrics.retrieval.labels(configuration.name).observe(time.perf_counter() - started)
        return passages, "used" if passages else "empty"

    def _without_context(self, configuration: Configuration, reason: str, error: Exception) -> str:
        """The configuration's on_error when retrieval failed: refuse, or go on without context."""
        if configuration.retrieval is not None and configuration.retrieval.on_error == "fail":
            raise RetrievalError(f"retrieval failed: {reason}") from error
        log.warning("answering %s without context: %s", configuration.name, reason)
        return "failed"

    def _few_shot(
        self, configuration: Configuration, query: str
    ) -> tuple[FewShotExample, ...] | None:
        """The examples nearest the query for `select: similar`; None leaves the fixed ones (also
        when the embedder cannot be reached)."""
        few_shot = configuration.few_shot
        if few_shot is None or few_shot.select != "similar":
            return None
        try:
            return self.examples.nearest(few_shot, query)
        except IndexUnavailable as error:
            log.warning("%s: the fixed few-shot examples: %s", configuration.name, error)
            return None

    def _retrieve_and_plan(
        self,
        configuration: Configuration,
        conversation: Sequence[ChatMessage],
        asked: SamplingRequest,
        query: str | None,
    ) -> tuple[router.Plan, str | None]:
        """Retrieves and selects similar few-shot for the query (None: neither), then plans;
        blocking, so `_planned` runs it in a worker thread."""
        passages: list[RetrievedPassage] = []
        retrieval = few_shot = None
        if query is not None:
            passages, retrieval = self._retrieve(configuration, query)
            few_shot = self._few_shot(configuration, query)
        window, parts = self.limits.context_window, self.token_parts
        planned = router.plan(conversation, asked, configuration, passages, parts, window, few_shot)
        return planned, retrieval

    async def _planned(
        self,
        configuration: Configuration,
        conversation: Sequence[ChatMessage],
        asked: SamplingRequest,
        query: str,
    ) -> tuple[router.Plan, str | None]:
        """Retrieval, similar few-shot and planning in one worker thread, so nothing that embeds or
        tokenises much runs on the event loop (a short prompt without retrieval is planned on it).
        The retrieval timeout bounds that hop; past it, the plan is made without context (on the
        planning threads, which a stalled index cannot take) or the request refused."""
        loop = asyncio.get_running_loop()
        alone = partial(self._retrieve_and_plan, configuration, conversation, asked, None)
        spec, few_shot = configuration.retrieval, configuration.few_shot
        if spec is None and (few_shot is None or few_shot.select != "similar"):
            if router.prompt_chars(configuration, conversation) <= INLINE_PLAN_CHARS:
                return alone()
            return await loop.run_in_executor(self._planning, alone)
        hop = asyncio.to_thread(self._retrieve_and_plan, configuration, conversation, asked, query)
        if spec is None:
            return await hop
        try:
            return await asyncio.wait_for(hop, self.limits.retrieval_timeout_s)
        except TimeoutError as error:
            reason = f"no answer in {self.limits.retrieval_timeout_s} s"
            retrieval = self._without_context(configuration, reason, error)
            return (await loop.run_in_executor(self._planning, alone))[0], retrieval

    async def prepare(
        self,
        request: ChatCompletionRequest,
        *,
        caller: str | None = None,
        correlation_id: str | None = None,
        user_header: str | None = None,
        debug: bool = False,
    ) -> Prepared:
        """Routes, checks limits, retrieves and plans; a request refused here is observed and
        its LadderError raised. The response gets a new id; `caller` (who may score it) and
        the client's `correlation_id` are recorded with its exposure. `debug` asks for the
        final prompt (shown when debug prompts are on)."""
        ticket = Ticket(response_id(), request.model)
        try:
            if len(request.model) > self.limits.max_model_chars:
                raise InvalidRequest(
                    f"model is over {self.limits.max_model_chars} characters", param="model"
                )
            if self.experiments is not None:
                ticket.route = await self.experiments.route(
                    request.model,
                    request.user,
                    user_header,
                    ticket.id,
                    owner=caller,
                    correlation_id=correlation_id,
                )
                # The clock restarts once the arm is known: an arm's latency leaves out the
                # write that recorded its exposure.
                ticket.started = time.perf_counter()
            name = ticket.route.configuration if ticket.route else request.model
            prepared = await self._plan(ticket, request, self._configuration(name))
        except LadderError as error:
            self.observe(ticket, error.status_code)
            raise
        if debug and self.debug_prompts:
            prompt = [{"role": m.role, "content": m.content} for m in prepared.plan.messages]
            prepared.info.prompt = prompt
        return prepared

    async def _plan(
        self, ticket: Ticket, request: ChatCompletionRequest, configuration: Configuration
    ) -> Prepared:
        self._check_limits(request)
        conversation = request.conversation()
        query = router.retrieval_query(conversation)
        asked = request.sampling_request()
        plan, retrieval = await self._planned(configuration, conversation, asked, query)
        plan = replace(plan, output=requested_output(request.response_format, plan.output))
        check_forced_tool_call(request, plan.output)
        route = ticket.route
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
            experiment=route.experiment if route else None,
            arm=route.arm if route else None,
        )
        return Prepared(ticket, int(time.time()), request, plan, info)

    def observe(
        self,
        ticket: Ticket,
        status: int,
        plan: router.Plan | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Records how a request ended in the metrics and, when an experiment routed it, for
        its arm; a request refused before it was planned has no plan."""
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        self._count(ticket, str(status), plan, tokens)
        if self.experiments is None or ticket.route is None:
            return
        cost = self.experiments.cost(plan.configuration, plan.adapter, *tokens) if plan else 0.0
        outcome = ArmOutcome.since(ticket.started, status, ticket.first_token, tokens, cost)
        self.experiments.observe(ticket.id, ticket.route.experiment, outcome)

    def _count(
        self, ticket: Ticket, status: str, plan: router.Plan | None, tokens: tuple[int, int]
    ) -> None:
        if plan is None:
            # Refused before planning: counted under the model asked for, with no adapter, when
            # that model is served; a name from the client must not grow the metrics for good.
            known = ticket.route is not None or self._configs().get(ticket.model) is not None
            model = ticket.model if known else UNKNOWN_MODEL
            self.metrics.requests.labels(model, "none", status).inc()
            return
        labels = (plan.configuration, plan.adapter or "base")
        self.metrics.requests.labels(*labels, status).inc()
        self.metrics.latency.labels(*labels).observe(time.perf_counter() - ticket.started)
        self.metrics.prompt_tokens.labels(*labels).inc(tokens[0])
        self.metrics.completion_tokens.labels(*labels).inc(tokens[1])

    def _generation(self, prepared: Prepared) -> GenerationRequest:
        plan = prepared.plan
        tools = prepared.request.tool_use()
        return GenerationRequest(
            plan.messages, plan.adapter, plan.sampling, output=plan.output, tools=tools
        )

    async def complete(self, prepared: Prepared) -> ChatCompletionResponse:
        """Generates the whole answer."""
        try:
            completion = await self.engine.complete(self._generation(prepared))
        except LadderError as error:
            self.observe(prepared.ticket, error.status_code, prepared.plan)
            raise
        self.observe(prepared.ticket, 200, prepared.plan, completion.usage)
        return ChatCompletionResponse(
            id=prepared.ticket.id,
            created=prepared.created,
            model=prepared.request.model,
            choices=choices_of(completion.answers),
            usage=usage_out(completion.usage),
            ladder=self._closing_info(prepared, completion.text) or prepared.info,
        )

    def _closing_info(self, prepared: Prepared, answer: str) -> LadderInfo | None:
        """With inline citations, the ladder info with the (first) answer's [n] markers mapped
        to its citations; None when the configuration asks for no citations."""
        return with_cited(prepared.info, answer) if prepared.plan.inline_citations else None

    async def open_stream(self, prepared: Prepared) -> AsyncIterator[str]:
        """Starts generation and waits for its first piece, so a request the engine refuses
        (queue full, unknown adapter, engine down) fails with its status instead of a 200 stream."""
        deltas = self.engine.stream(self._generation(prepared))
        try:
            first = await anext(deltas)
        except LadderError as error:
            await deltas.aclose()
            self.observe(prepared.ticket, error.status_code, prepared.plan)
            raise
        except StopAsyncIteration:
            first = TextDelta("", "stop", Usage(0, 0))
        ticket, plan = prepared.ticket, prepared.plan
        ticket.first_token = time.perf_counter()
        ttft = self.metrics.ttft.labels(plan.configuration, plan.adapter or "base")
        ttft.observe(ticket.first_token - ticket.started)
        return self._events(prepared, first, deltas)

    async def _events(
        self, prepared: Prepared, first: TextDelta, deltas: AsyncGenerator[TextDelta, None]
    ) -> AsyncIterator[str]:
        """SSE lines in OpenAI's chunk format, ending with `data: [DONE]`, errors included; with
        inline citations the finish chunk carries the ladder info again, citations mapped."""
        options = prepared.request.stream_options
        include_usage = options is not None and options.include_usage
        writer = ChunkWriter(
            prepared.ticket.id, prepared.created, prepared.request.model, include_usage
        )
        status, usage, answer = 200, Usage(0, 0), ""
        yield writer.opening(prepared.info)
        try:
            async with aclosing(deltas):
                async for delta in chained(first, deltas):
                    answer += delta.text
                    last = delta.finish_reason is not None
                    closing = self._closing_info(prepared, answer) if last else None
                    for line in writer.lines(delta, closing):
                        yield line
                    usage = delta.usage or usage
        except LadderError as error:
            status = error.status_code
            yield error_line(error)
        except Exception:
            log.exception("stream %s failed", prepared.ticket.id)
            status = 500
            yield error_line(LadderError("the stream failed; see the server log"))
        finally:
            self.observe(prepared.ticket, status, prepared.plan, usage)
        yield DONE
