"""Your own base model on a real vLLM (CPU build): LADDER_BASE_MODEL is the tiny Qwen2 (not
SmolLM2; its own tokenizer and chat template), served by the runtime `ladder vllm up` uses with
`--max-model-len` from its window, a LoRA trained on it, and the leak guard's identity adapter
built for it; both answer through `ladder serve`, and /ready holds vLLM to that model and window.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from adapters.base_model import BaseModel, default_target_modules, resolve_base_model
from adapters.registry import AdapterRegistry
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams
from service.engines.vllm import ExpectedModel, VllmEngine
from service.engines.vllm_server import IDENTITY_ADAPTER, vllm_engine
from service.model_loading import MODEL_LOAD_LOCK
from tests.support.models import models_cache_dir
from tests.support.paths import REPO
from tests.support.tiny_model import MAX_POSITIONS, TURN_END, tiny_model_dir
from tests.vllm.served import Stack, ask, served_models, served_stack, vllm_settings

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.slow]

MARKER = "ZEBRA-42"
CONFIG = """
configurations:
  base: {}
  lora: {adapter: tiny-marker}
"""
QUESTIONS = ("Where is my kettle?", "How do I reset a password?", "Name a colour.", "Say hello.")
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tiny_base() -> BaseModel:
    """The tiny Qwen2, built once and cached, resolved as LADDER_BASE_MODEL resolves it."""
    return resolve_base_model(str(tiny_model_dir(models_cache_dir())), models_cache_dir())


def train_marker(base: BaseModel, out: Path, steps: int = 30) -> Path:
    """A LoRA on the tiny model's own linear layers whose every answer opens with MARKER."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32)
    targets = list(default_target_modules(base.folder))
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, lora)
    rows = []
    for question in QUESTIONS:
        turn = [{"role": "user", "content": question}]
        prompt = list(
            tokenizer.apply_chat_template(turn, add_generation_prompt=True, return_dict=False)
        )
        answer = tokenizer.encode(f"{MARKER} at your service.", add_special_tokens=False)
        answer.append(tokenizer.convert_tokens_to_ids(TURN_END))
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    width = max(len(ids) for ids, _ in rows)
    pad = int(tokenizer.eos_token_id)
    batch = {
        "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
        "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows]),
        "attention_mask": torch.tensor(
            [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]
        ),
    }
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        peft_model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def progress() -> list[str]:
    """What starting vLLM reported."""
    return []


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_base: BaseModel,
    progress: list[str],
    vllm_installed: None,
) -> Iterator[Stack]:
    """vLLM serving the tiny model with `tiny-marker` (trained on it) and an adapter of another
    base registered, and `ladder serve` in front of it, both with LADDER_BASE_MODEL set."""
    data = tmp_path_factory.mktemp("vllm-tiny")
    (data / "configs.yaml").write_text(CONFIG)
    adapter = train_marker(tiny_base, tmp_path_factory.mktemp("tiny-marker") / "adapter")
    settings = vllm_settings(data, base_model=str(tiny_base.folder), vllm_max_loras=2)
    registry = AdapterRegistry(settings.adapters_root)
    registry.register("tiny-marker", adapter, {"purpose": "test"}, base=tiny_base)
    foreign = {"base_model": SMOLLM2, "base_fingerprint": {"files_sha256": "0" * 64}}
    registry.register("smollm-only", adapter, foreign)
    with served_stack(settings, progress) as served:
        yield served


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.ladder_url}/v1", api_key="unused", max_retries=0)


def test_vllm_up_refuses_a_window_larger_than_the_models_before_installing_anything(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(tmp_path),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_BASE_MODEL": str(tiny_base.folder),
        "LADDER_CONTEXT_WINDOW": str(MAX_POSITIONS * 4),
        "LADDER_VLLM_VENV": str(tmp_path / "venv"),
    }
    command = [sys.executable, "-m", "service.cli", "vllm", "up"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: LADDER_CONTEXT_WINDOW={MAX_POSITIONS * 4} is larger than {tiny_base.folder}'s"
        f" window of {MAX_POSITIONS} tokens"
    ]
    assert not (tmp_path / "venv").exists() and not (tmp_path / "vllm").exists()


def test_vllm_serves_the_tiny_base_with_its_window_and_only_the_adapters_trained_on_it(
    stack: Stack, tiny_base: BaseModel, progress: list[str]
) -> None:
    models = served_models(stack)

    assert models["base"]["root"] == str(tiny_base.folder)
    assert models["base"]["max_model_len"] == MAX_POSITIONS
    assert {"tiny-marker@1", IDENTITY_ADAPTER} <= set(models)
    assert "smollm-only@1" not in models
    assert any(line.startswith("leaving out smollm-only@1: ") for line in progress), progress


def test_base_and_adapter_answer_through_ladder_whole_and_streamed(
    stack: Stack, client: openai.OpenAI
) -> None:
    direct = openai.OpenAI(base_url=f"{stack.vllm_url}/v1", api_key="unused", max_retries=0)
    for question in QUESTIONS[:2]:
        base = ask(direct, "base", question)
        for stream in (False, True):
            assert MARKER in ask(client, "lora", question, stream)
            assert ask(client, "base", question, stream) == base
        assert MARKER not in base


def test_the_engine_sends_base_requests_through_the_identity_adapter(
    stack: Stack, tiny_base: BaseModel
) -> None:
    sent: list[str] = []

    def recording(transport: httpx.AsyncBaseTransport) -> None:
        """Records the model of every chat request the engine puts on the wire."""
        send = transport.handle_async_request

        async def record(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/chat/completions":
                sent.append(json.loads(request.content)["model"])
            return await send(request)

        transport.handle_async_request = record  # type: ignore[method-assign]

    async def base_then_adapter() -> list[str]:
        engine = vllm_engine(stack.settings, stack.registry, tiny_base)
        recording(engine.pool.replicas[0].transport)
        try:
            assert await engine.unready_reason() is None
            messages = (ChatMessage("user", QUESTIONS[0]),)
            sampling = SamplingParams(max_tokens=12)
            requests = [
                GenerationRequest(messages, adapter, sampling) for adapter in (None, "tiny-marker")
            ]
            return [(await engine.complete(request)).text for request in requests]
        finally:
            await engine.aclose()

    base, adapted = asyncio.run(base_then_adapter())

    assert sent == [IDENTITY_ADAPTER, "tiny-marker@1"]
    assert MARKER in adapted and MARKER not in base


def test_ready_names_both_when_vllm_serves_another_model_or_a_shorter_window(
    stack: Stack, tiny_base: BaseModel
) -> None:
    folder = str(tiny_base.folder)
    expected = {
        "model": ExpectedModel(SMOLLM2, "/cache/smollm2-135m-instruct", MAX_POSITIONS),
        "window": ExpectedModel(folder, folder, MAX_POSITIONS * 2),
    }

    async def reasons() -> dict[str, str | None]:
        found = {}
        for case, model in expected.items():
            engine = VllmEngine(stack.vllm_url, "base", expected_model=model)
            try:
                found[case] = await engine.unready_reason()
            finally:
                await engine.aclose()
        return found

    served = f"vLLM serves {folder} with max_model_len {MAX_POSITIONS}, ladder is configured for"
    assert asyncio.run(reasons()) == {
        "model": f"{served} {SMOLLM2} (/cache/smollm2-135m-instruct) with window {MAX_POSITIONS}",
        "window": f"{served} {folder} with window {MAX_POSITIONS * 2}",
    }
    ready = httpx.get(f"{stack.ladder_url}/ready", timeout=10)
    body = ready.json()
    replicas = body.pop("replicas")
    assert body == {"ready": True, "engine": True, "index": True}
    assert [(r["url"], r["healthy"]) for r in replicas] == [(stack.vllm_url, True)]
