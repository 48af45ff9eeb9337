"""The in-process engine: one transformers model and its LoRA adapters behind one worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from service.engines.base import (
    Answer,
    Capabilities,
    ChatMessage,
    Completion,
    GenerationRequest,
    OutputConstraint,
    SamplingParams,
    TextDelta,
    TokenLogprob,
    Usage,
)
from service.engines.decoding import TokenDecoder, end_token_ids
from service.engines.local_model import LoadedModel, adapter_selected, check_folders, load_model
from service.engines.sampling import (
    LogprobRecorder,
    check_logit_bias,
    generation_config,
    logits_processors,
    token_bytes,
    token_logprob,
)
from service.engines.structured import ConstraintCompiler
from service.errors import (
    ContextTooLong,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    LadderError,
    NotFound,
)

Delivery = Callable[[TextDelta | LadderError], None]
Speller = Callable[[int], tuple[str, tuple[int, ...]]]

# OpenAI chat parameters this engine honours (beyond the basic sampling ones); tools are not
# among them: transformers has no tool-call parser for arbitrary chat templates.
LOCAL_CAPABILITIES = Capabilities(
    parameters=frozenset(
        {"logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "n"}
    ),
    streamed=frozenset(
        {"logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty"}
    ),
)


@dataclass(eq=False)
class _Job:
    """One admitted request, from the event loop to the worker thread."""

    prompt_ids: list[int]
    adapter: str | None
    sampling: SamplingParams
    max_new_tokens: int
    deliver: Delivery
    output: OutputConstraint | None = None
    enqueued_at: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)


class _TokenSink:
    """Receives tokens from transformers' generate and decides when it must stop; with a
    recorder, each delivered piece carries the log-probabilities of the tokens it holds (end
    tokens have no text, so no entry)."""

    def __init__(
        self,
        job: _Job,
        decoder: TokenDecoder,
        recorder: LogprobRecorder | None,
        spell: Speller,
        ends: frozenset[int],
    ) -> None:
        self._job = job
        self._decoder = decoder
        self._recorder = recorder
        self._spell = spell
        self._ends = ends
        self._prompt_seen = False
        self.pending: list[TokenLogprob] = []

    def put(self, value: Any) -> None:
        """Streamer hook: the first call carries the prompt, then one token per call."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        token_id = int(value.reshape(-1)[0])
        recorder, live = self._recorder, self._decoder.finish_reason is None
        if recorder is not None and live and token_id not in self._ends:
            top = self._job.sampling.top_logprobs
            self.pending.append(token_logprob(recorder.last, token_id, top, self._spell))
        piece = self._decoder.add(token_id)
        if piece and not self._job.cancelled.is_set():
            self._job.deliver(TextDelta(text=piece, logprobs=self.taken()))

    def taken(self) -> tuple[TokenLogprob, ...]:
        """The log-probabilities not delivered yet, now delivered."""
        taken, self.pending = tuple(self.pending), []
        return taken

    def end(self) -> None:
        """Streamer hook: generation ended."""

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """Stopping criterion: a stop string was hit or the client went away."""
        import torch

        stop = self._decoder.finish_reason is not None or self._job.cancelled.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)


class LocalEngine:
    """Runs generation in-process on CPU, one request at a time, with a bounded queue."""

    name = "local"
    capabilities = LOCAL_CAPABILITIES

    def __init__(
        self,
        model_dir: Path,
        adapters: Mapping[str, Path] | None = None,
        *,
        max_queue: int = 8,
        threads: int = 1,
        queue_timeout_s: float = 60.0,
        output_cache: int = 64,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        check_folders(model_dir, adapters or {})
        self._adapters = dict(adapters or {})
        self._max_queue = max_queue
        self._queue_timeout_s = queue_timeout_s
        self._context_window = int(AutoConfig.from_pretrained(model_dir).max_position_embeddings)
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self._tokenizer_lock = threading.Lock()
        self._eos_ids = end_token_ids(model_dir, self._tokenizer.eos_token_id)
        self._constraints = ConstraintCompiler(
            self._tokenizer, len(self._tokenizer), self._eos_ids, output_cache
        )
        self._jobs: set[_Job] = set()
        self._jobs_lock = threading.Lock()
        self._mean_job_s = 1.0
        self._closed = False
        # torch's thread count is process-wide; the worker sets it once, for every later call.
        self._executor = ThreadPoolExecutor(
            1, "local-engine", initializer=torch.set_num_threads, initargs=(threads,)
        )
        self._loaded: Future[LoadedModel] = self._executor.submit(
            load_model, model_dir, self._adapters
        )

    async def wait_until_loaded(self) -> None:
        """Waits for the model load started by the constructor; raises if it failed."""
        try:
            await asyncio.wrap_future(self._loaded)
        except Exception as error:
            raise EngineUnavailable(f"the local model failed to load: {error}") from error

    async def ready(self) -> bool:
        """Tells whether the model is loaded and the engine is open."""
        done = self._loaded.done() and self._loaded.exception() is None
        return done and not self._closed

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished (running or queued)."""
        with self._jobs_lock:
            return len(self._jobs)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Counts the tokens of the chat template, generation prompt included."""
        return len(self._encode_prompt(messages))

    async def complete(self, request: GenerationRequest) -> Completion:
        """Generates n whole answers one after the other; with a seed, choice i uses seed + i."""
        sampling = request.sampling
        answers: list[tuple[Answer, Usage]] = []
        for index in range(sampling.n):
            seed = None if sampling.seed is None else sampling.seed + index
            answers.append(
                await self._answer(replace(request, sampling=replace(sampling, seed=seed)))
            )
        generated = sum(usage.completion_tokens for _, usage in answers)
        # The prompt is counted once, as OpenAI does for n choices.
        usage = Usage(answers[0][1].prompt_tokens, generated)
        return Completion(tuple(answer for answer, _ in answers), usage)

    async def _answer(self, request: GenerationRequest) -> tuple[Answer, Usage]:
        """One whole answer from the stream of deltas."""
        pieces: list[str] = []
        logprobs: list[TokenLogprob] = []
        async with contextlib.aclosing(self.stream(request)) as deltas:
            async for delta in deltas:
                pieces.append(delta.text)
                logprobs.extend(delta.logprobs)
                if delta.finish_reason is not None and delta.usage is not None:
                    kept = tuple(logprobs) if request.sampling.logprobs else None
                    return Answer("".join(pieces), delta.finish_reason, kept), delta.usage
        raise EngineError("the local engine ended a generation without a final delta")

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        """Yields text as it is generated; admission errors raise on the first iteration."""
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[TextDelta | LadderError] = asyncio.Queue()
        job = self._admit(request, _deliverer(loop, received))
        try:
            while True:
                item = await received.get()
                if isinstance(item, LadderError):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()  # frees the worker if the client stopped reading

    async def aclose(self) -> None:
        """Cancels waiting and running requests and stops the worker thread."""
        self._closed = True
        with self._jobs_lock:
            for job in self._jobs:
                job.cancelled.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _encode_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Applies the chat template as given; the router decides the system message."""
        conversation = [{"role": message.role, "content": message.content} for message in messages]
        with self._tokenizer_lock:
            ids = self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        return list(ids)

    def _admit(self, request: GenerationRequest, deliver: Delivery) -> _Job:
        """Validates a request and queues it, or refuses it at once."""
        if self._closed:
            raise EngineUnavailable("the local engine is closed")
        if request.adapter is not None and request.adapter not in self._adapters:
            raise NotFound(f"unknown adapter {request.adapter!r}", param="adapter")
        check_logit_bias(request.sampling.logit_bias, len(self._tokenizer))
        prompt_ids = self._encode_prompt(request.messages)
        room = self._context_window - len(prompt_ids)
        if room <= 0:
            window = self._context_window
            message = f"the prompt has {len(prompt_ids)} tokens; the model's window is {window}"
            raise ContextTooLong(message, param="messages")
        max_new_tokens = min(request.sampling.max_tokens, room)
        job = _Job(
            prompt_ids, request.adapter, request.sampling, max_new_tokens, deliver, request.output
        )
        with self._jobs_lock:
            if len(self._jobs) >= self._max_queue:
                retry_after = min(60.0, max(1.0, self._mean_job_s * len(self._jobs)))
                raise EngineOverloaded(
                    f"the local engine has {len(self._jobs)} requests queued",
                    retry_after=round(retry_after, 1),
                )
            self._jobs.add(job)
        self._executor.submit(self._run, job)
        return job

    def _run(self, job: _Job) -> None:
        """Runs one job on the worker thread and always releases its queue slot."""
        started = time.monotonic()
        try:
            if job.cancelled.is_set():
                job.deliver(EngineUnavailable("the request was cancelled before it started"))
                return
            if started - job.enqueued_at > self._queue_timeout_s:
                raise EngineTimeout(f"the request waited over {self._queue_timeout_s:g}s in queue")
            self._generate(job)
        except LadderError as error:
            job.deliver(error)
        except Exception as error:  # torch and transformers errors end here, translated once
            job.deliver(EngineError(f"local generation failed: {type(error).__name__}: {error}"))
        finally:
            elapsed = time.monotonic() - started
            with self._jobs_lock:
                self._jobs.discard(job)
                self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * elapsed

    def _generate(self, job: _Job) -> None:
        """Generates on the worker thread, delivering deltas and then the final one."""
        import torch
        from transformers import StoppingCriteriaList

        try:
            loaded = self._loaded.result()
        except Exception as error:
            raise EngineUnavailable(f"the local model failed to load: {error}") from error
        decoder = TokenDecoder(self._decode, self._eos_ids, job.sampling.stop)
        recorder = LogprobRecorder() if job.sampling.logprobs else None
        sink = _TokenSink(job, decoder, recorder, self._spell, self._eos_ids)
        if job.sampling.seed is not None:
            torch.manual_seed(job.sampling.seed)
        input_ids = torch.tensor([job.prompt_ids])
        constraint = self._constraints.processor(job.output)
        processors = logits_processors(job.sampling, len(job.prompt_ids), recorder, constraint)
        with adapter_selected(loaded, job.adapter):
            loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=generation_config(
                    job.sampling, job.max_new_tokens, self._eos_ids
                ),
                logits_processor=processors,
                streamer=sink,
                stopping_criteria=StoppingCriteriaList([sink]),
            )
        if job.cancelled.is_set():
            job.deliver(EngineUnavailable("the generation was cancelled"))
            return
        usage = Usage(len(job.prompt_ids), decoder.generated_tokens)
        finish = decoder.finish_reason or "length"
        last = TextDelta(decoder.remainder(), finish, usage, sink.taken())
        job.deliver(last)

    def _decode(self, token_ids: list[int]) -> str:
        with self._tokenizer_lock:
            return str(self._tokenizer.decode(token_ids, skip_special_tokens=True))

    def _spell(self, token_id: int) -> tuple[str, tuple[int, ...]]:
        """One token's text and exact bytes, for log-probabilities."""
        with self._tokenizer_lock:
            piece = str(self._tokenizer.convert_ids_to_tokens(token_id))
            text = str(self._tokenizer.decode([token_id]))
        return text, token_bytes(piece, text)


def _deliverer(loop: asyncio.AbstractEventLoop, received: asyncio.Queue[Any]) -> Delivery:
    """Hands items from the worker thread to the requesting event loop."""

    def deliver(item: TextDelta | LadderError) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed; nobody is listening
            loop.call_soon_threadsafe(received.put_nowait, item)

    return deliver
