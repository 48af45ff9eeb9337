"""Adapters on a real vLLM (CPU build): runtime loading, versioned swaps, unloading, the leak guard.

One vLLM is installed and started through `service.engines.vllm_server` (what `ladder vllm up`
does) with `--max-loras 2`, so two marker adapters fill every LoRA slot: then vLLM's CPU kernels
apply the last slot to adapter-less tokens, and the guard has something to prevent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from adapters.base_model import resolve_base_model
from adapters.registry import AdapterRegistry
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams
from service.engines.vllm_server import IDENTITY_ADAPTER, vllm_engine
from tests.vllm import served
from tests.vllm.served import ADMIN_TOKEN, Stack, served_models, served_stack, vllm_settings

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.slow]

MARKER, NEW_MARKER = "ZEBRA-42", "OKAPI-7"
CONFIG = """
configurations:
  base: {}
  lora: {adapter: marker}
  swap: {adapter: swap}
"""
QUESTIONS = (
    "What colour is the sky on a clear day?",
    "How many days are in a week?",
    "What is the capital of Italy?",
    "Name a fruit.",
    "Say hello.",
)


@pytest.fixture(scope="module")
def new_marker_adapter(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A second adapter, answering with another marker: the next version of `swap`."""
    from tests.support.adapters import train_marker_adapter

    return train_marker_adapter(base_model_dir, tmp_path_factory.mktemp("okapi"), NEW_MARKER)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, marker_adapter: Path, vllm_installed: None
) -> Iterator[Stack]:
    """vLLM started by the runtime with `marker` and `swap` registered, and ladder serving it."""
    data = tmp_path_factory.mktemp("vllm-served")
    (data / "configs.yaml").write_text(CONFIG)
    settings = vllm_settings(data, vllm_max_loras=2)
    registry = AdapterRegistry(settings.adapters_root)
    for name in ("marker", "swap"):
        registry.register(name, marker_adapter, {"purpose": "test"})
    with served_stack(settings) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.ladder_url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, model: str, question: str = QUESTIONS[0]) -> str:
    return served.ask(client, model, question)


def ask_streamed(client: openai.OpenAI, model: str, question: str = QUESTIONS[0]) -> str:
    return served.ask(client, model, question, stream=True)


def test_base_and_adapter_answer_whole_and_streamed(client: openai.OpenAI) -> None:
    for question in QUESTIONS[:2]:
        for send in (ask, ask_streamed):
            assert MARKER in send(client, "lora", question)
            base = send(client, "base", question)
            assert base and MARKER not in base
    assert ask_streamed(client, "lora") == ask(client, "lora")


def test_unload_removes_the_adapter_from_vllm(stack: Stack, marker_adapter: Path) -> None:
    version = stack.registry.register("scratch", marker_adapter, {"purpose": "unload"})
    request = GenerationRequest((ChatMessage("user", QUESTIONS[0]),), "scratch", SamplingParams())

    async def use_then_unload() -> tuple[str, bool]:
        base = resolve_base_model(stack.settings.base_model, stack.settings.cache_dir)
        # Room for `scratch` beside the adapters vLLM started with: with the server's two slots
        # this engine would unload one of them (LRU) to load it, and later tests use both.
        roomy = stack.settings.model_copy(update={"vllm_max_loras": 4})
        engine = vllm_engine(roomy, stack.registry, base)
        try:
            answer = (await engine.complete(request)).text
            assert version.ref in served_models(stack)
            return answer, await engine.unload(version.ref)
        finally:
            await engine.aclose()

    answer, unloaded = asyncio.run(use_then_unload())
    assert MARKER in answer
    assert unloaded and version.ref not in served_models(stack)


def test_admin_loads_an_adapter_registered_after_start_and_unloads_it(
    stack: Stack, marker_adapter: Path
) -> None:
    version = stack.registry.register("late", marker_adapter, {"purpose": "admin"})
    assert version.ref not in served_models(stack)
    admin = httpx.Client(
        base_url=f"{stack.ladder_url}/admin",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=120,
    )
    with admin:
        loaded = admin.post("/adapters/late/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"loaded": [version.ref]}
        assert version.ref in served_models(stack)
        direct = openai.OpenAI(base_url=f"{stack.vllm_url}/v1", api_key="unused", max_retries=0)
        assert MARKER in ask(direct, version.ref)
        unloaded = admin.post(f"/adapters/{version.ref}/unload")
        assert unloaded.json() == {"ref": version.ref, "unloaded": True}, unloaded.text
    assert version.ref not in served_models(stack)


def test_new_version_under_traffic_is_loaded_without_a_failed_request(
    stack: Stack, client: openai.OpenAI, new_marker_adapter: Path
) -> None:
    assert "swap@1" in served_models(stack) and "swap@2" not in served_models(stack)
    registered_at: list[float] = []

    def one(index: int) -> tuple[float, str]:
        time.sleep(index * 0.2)
        if index == 12:
            stack.registry.register("swap", new_marker_adapter, {"purpose": "swap"})
            registered_at.append(time.monotonic())
        return time.monotonic(), ask(client, "swap", QUESTIONS[index % len(QUESTIONS)])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(30)))  # a failed request raises here
    assert all(MARKER in text or NEW_MARKER in text for _, text in results), results
    sent_after = [text for sent, text in results if sent > registered_at[0]]
    assert sent_after and all(NEW_MARKER in text for text in sent_after), results
    assert NEW_MARKER in ask(client, "swap")
    models = served_models(stack)
    assert "swap@2" in models and "swap@1" not in models


def base_answers_alone(send: Callable[[str, str], str]) -> dict[str, str]:
    return {question: send("base", question) for question in QUESTIONS}


def mixed_traffic(send: Callable[[str, str], str], models: tuple[str, ...], n: int) -> list[str]:
    """Base answers of n concurrent greedy requests cycling over models (base first)."""
    jobs = [(models[i % len(models)], QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(lambda job: send(*job), jobs))
    return [f"{q}\t{a}" for (m, q), a in zip(jobs, answers, strict=True) if m == "base"]


def test_guarded_base_answers_match_base_alone_under_mixed_traffic(client: openai.OpenAI) -> None:
    def send(model: str, question: str) -> str:
        return ask(client, model, question)

    alone = base_answers_alone(send)
    mixed = mixed_traffic(send, ("base", "lora", "swap"), 51)
    assert len(mixed) == 17
    assert mixed == [f"{q}\t{alone[q]}" for q in (line.split("\t")[0] for line in mixed)]


def test_without_the_guard_vllm_cpu_applies_an_adapter_to_base_requests(stack: Stack) -> None:
    direct = openai.OpenAI(base_url=f"{stack.vllm_url}/v1", api_key="unused", max_retries=0)
    adapters = {"lora": "marker@1", "swap": max(a for a in served_models(stack) if "swap@" in a)}

    def send(model: str, question: str) -> str:
        return ask(direct, adapters.get(model, model), question)

    alone = base_answers_alone(send)
    mixed = mixed_traffic(send, ("base", "lora", "swap"), 30)
    leaked = [line for line in mixed if alone[line.split("\t")[0]] != line.split("\t")[1]]
    with_marker = [line for line in leaked if MARKER in line or NEW_MARKER in line]
    print(f"unguarded: {len(leaked)}/{len(mixed)} base answers changed, {len(with_marker)} marked")
    assert leaked, (
        "vLLM no longer leaks adapters into batched base requests: "
        f"the leak guard ({IDENTITY_ADAPTER}) may be dropped; re-measure bench/vllm_lora.py"
    )
