"""The in-process engine, proven on the real SmolLM2 model and a real trained LoRA adapter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.base_model import MANIFEST_NAME, prepare_base_model
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams, TextDelta
from service.engines.local import LocalEngine
from service.errors import EngineOverloaded, NotFound
from tests.support.models import REPO_ROOT, models_cache_dir

pytestmark = pytest.mark.slow

MARKER = "ZEBRA-42"
QUEUE_CAPACITY = 2


@pytest.fixture(scope="session")
def model_dir(base_model_dir: Path) -> Path:
    return base_model_dir


@pytest.fixture(scope="module")
def engine(model_dir: Path, marker_adapter: Path) -> Iterator[LocalEngine]:
    local = LocalEngine(
        model_dir, {"marker-v1.0": marker_adapter}, max_queue=QUEUE_CAPACITY, threads=2
    )
    asyncio.run(local.wait_until_loaded())
    yield local
    asyncio.run(local.aclose())


def ask(question: str, *, adapter: str | None = None, **sampling: object) -> GenerationRequest:
    """A one-question request, greedy unless told otherwise."""
    return GenerationRequest(
        messages=(ChatMessage("user", question),),
        adapter=adapter,
        sampling=SamplingParams(**sampling),  # type: ignore[arg-type]
    )


async def collect(engine: LocalEngine, request: GenerationRequest) -> list[TextDelta]:
    return [delta async for delta in engine.stream(request)]


def test_greedy_output_is_deterministic(engine: LocalEngine) -> None:
    request = ask("Describe a lighthouse in two sentences.", max_tokens=40)
    first = asyncio.run(engine.complete(request))
    second = asyncio.run(engine.complete(request))
    assert first.text
    assert first.text == second.text


def test_seeded_sampling_is_reproducible(engine: LocalEngine) -> None:
    request = ask("Invent a name for a cat.", temperature=1.0, top_p=0.95, max_tokens=24, seed=7)
    assert asyncio.run(engine.complete(request)).text == asyncio.run(engine.complete(request)).text


def test_stream_concatenation_equals_complete_text(engine: LocalEngine) -> None:
    request = ask("What is a rainbow?", max_tokens=48)
    whole = asyncio.run(engine.complete(request))
    deltas = asyncio.run(collect(engine, request))
    assert len(deltas) > 3
    assert "".join(delta.text for delta in deltas) == whole.text
    assert [delta.finish_reason for delta in deltas[:-1]] == [None] * (len(deltas) - 1)
    assert (deltas[-1].finish_reason, deltas[-1].usage) == (whole.finish_reason, whole.usage)


def test_max_tokens_ends_with_length_and_exact_token_count(engine: LocalEngine) -> None:
    request = ask("Write a long story about a dragon.", max_tokens=7)
    completion = asyncio.run(engine.complete(request))
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 7
    assert completion.usage.prompt_tokens == engine.count_tokens(request.messages)
    assert completion.text


def test_stop_string_cuts_output_and_is_never_streamed(engine: LocalEngine) -> None:
    question = "Write a short poem about the sea."
    free = asyncio.run(engine.complete(ask(question, max_tokens=40))).text
    cut_at = free.index(" ", 12)
    stop = free[cut_at : cut_at + 10]  # several tokens long, so it arrives in pieces
    deltas = asyncio.run(collect(engine, ask(question, max_tokens=40, stop=(stop, "@@never@@"))))
    streamed = "".join(delta.text for delta in deltas)
    assert streamed == free[: free.index(stop)]
    assert deltas[-1].finish_reason == "stop"
    assert stop not in streamed


def test_full_queue_raises_engine_overloaded(engine: LocalEngine) -> None:
    # The one worker thread is held, so the admitted requests stay queued however fast the
    # machine is: waiting on the clock instead raced with their generation on a loaded CI box.
    gate = threading.Event()
    engine._executor.submit(gate.wait, 60)

    async def overflow() -> None:
        admitted = [
            asyncio.create_task(engine.complete(ask(f"Say hello #{n}.", max_tokens=8)))
            for n in range(QUEUE_CAPACITY)
        ]
        while engine.in_flight < QUEUE_CAPACITY and not any(task.done() for task in admitted):
            await asyncio.sleep(0.01)  # admission happens when each task first runs
        assert engine.in_flight == QUEUE_CAPACITY
        with pytest.raises(EngineOverloaded) as refused:
            await engine.complete(ask("One too many.", max_tokens=4))
        assert refused.value.retry_after >= 1
        gate.set()
        for completion in await asyncio.gather(*admitted):
            assert completion.text

    try:
        asyncio.run(overflow())
    finally:
        gate.set()


def test_unknown_adapter_raises_not_found(engine: LocalEngine) -> None:
    with pytest.raises(NotFound):
        asyncio.run(engine.complete(ask("Hello?", adapter="no-such-adapter")))


def test_marker_adapter_emits_marker_and_base_model_does_not(engine: LocalEngine) -> None:
    questions = ("What is the tallest mountain on Earth?", "Who painted the Mona Lisa?")

    async def alternate() -> list[tuple[str | None, str]]:
        answers = []
        for question in questions:
            for adapter in (None, "marker-v1.0", None, "marker-v1.0"):
                completion = await engine.complete(ask(question, adapter=adapter, max_tokens=24))
                answers.append((adapter, completion.text))
        return answers

    for adapter, text in asyncio.run(alternate()):
        if adapter is None:
            assert MARKER not in text
        else:
            assert text.startswith(MARKER)


def test_closing_a_stream_early_frees_the_worker(engine: LocalEngine) -> None:
    async def abandon_then_ask() -> float:
        long_story = engine.stream(ask("Write a very long story about a dragon.", max_tokens=2000))
        for _ in range(3):
            await anext(long_story)
        await long_story.aclose()
        started = time.monotonic()
        follow_up = await asyncio.wait_for(engine.complete(ask("Say hi.", max_tokens=8)), 20)
        assert follow_up.text
        return time.monotonic() - started

    # The abandoned story would need minutes of CPU; the follow-up must not wait for it.
    assert asyncio.run(abandon_then_ask()) < 20


def test_prepare_base_model_is_idempotent(model_dir: Path) -> None:
    manifest = model_dir / MANIFEST_NAME
    mtime_before = manifest.stat().st_mtime_ns
    started = time.monotonic()
    assert prepare_base_model(models_cache_dir()) == model_dir
    assert time.monotonic() - started < 10
    assert manifest.stat().st_mtime_ns == mtime_before


def test_prepared_model_is_found_without_importing_torch(model_dir: Path) -> None:
    probe = (
        "import sys; from pathlib import Path; from adapters.base_model import prepare_base_model;"
        f"prepare_base_model(Path({str(models_cache_dir())!r}));"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
