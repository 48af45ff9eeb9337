"""`ladder serve` on a base model that is not SmolLM2: the tiny Qwen2 of tests/support/tiny_model.py
(another architecture, tokenizer and chat template), named by LADDER_BASE_MODEL, answers the
official openai client whole and streamed, through its own template, with a LoRA trained on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from adapters.base_model import default_target_modules, parameter_count, resolve_base_model
from adapters.registry import AdapterRegistry
from service.api.app import create_app
from service.errors import ConfigurationError
from service.model_loading import MODEL_LOAD_LOCK
from service.settings import Settings
from tests.support.ladder_process import ladder_serve
from tests.support.models import models_cache_dir
from tests.support.tiny_model import tiny_model_dir

SYSTEM_PROMPT = "Answer briefly."
CONFIG = f"""
configurations:
  base: {{}}
  prompt:
    system_prompt: {SYSTEM_PROMPT}
  lora:
    system_prompt: {SYSTEM_PROMPT}
    adapter: tiny-lora
"""
# SmolLM2's ChatML, rendered with the tiny tokenizer: what a prompt would cost had ladder kept it.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = "Where is my order?"
LADDER = [sys.executable, "-m", "service.cli"]


def random_lora(model_dir: Path, out: Path, seed: int = 0) -> Path:
    """A rank-4 LoRA on the model's own linear layers with random (non-zero) B matrices, so it
    visibly changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    targets = list(default_target_modules(model_dir))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=targets))
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    peft.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model_dir(models_cache_dir())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Iterator[str]:
    """`ladder serve` (local engine) with LADDER_BASE_MODEL = the tiny model and its adapter."""
    data = tmp_path_factory.mktemp("tiny-served")
    (data / "configs.yaml").write_text(CONFIG)
    base = resolve_base_model(str(tiny), models_cache_dir())
    adapter = random_lora(tiny, data / "lora")
    manifest = {"base_model": base.source, "base_fingerprint": base.fingerprint.as_dict()}
    AdapterRegistry(data / "adapters").register("tiny-lora", adapter, manifest)
    env = {
        **os.environ,
        "LADDER_BASE_MODEL": str(tiny),
        "LADDER_DATA_DIR": str(data),
        "LADDER_CONFIG": str(data / "configs.yaml"),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_DEBUG_PROMPTS": "true",
    }
    with ladder_serve(env, data / "server.log") as ladder:
        yield ladder.base


@pytest.fixture(scope="module")
def client(served: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, model: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=16,
        temperature=0,
        extra_headers={"x-ladder-debug": "1"},
        **extra,
    )


def template_tokens(tiny: Path, prompt: list[dict[str, str]], template: str | None = None) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    ids = tokenizer.apply_chat_template(
        prompt, chat_template=template, add_generation_prompt=True, tokenize=True
    )
    return len(ids if isinstance(ids, list) else ids["input_ids"])


def test_the_tiny_model_answers_whole_through_its_own_template(
    client: openai.OpenAI, tiny: Path
) -> None:
    response = ask(client, "prompt")
    assert response.choices[0].message.content
    prompt = response.model_extra["ladder"]["prompt"]
    assert prompt == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]
    own = template_tokens(tiny, prompt)
    assert response.usage.prompt_tokens == own
    assert template_tokens(tiny, prompt, CHATML) != own, "the two templates must be told apart"
    assert 0 < response.usage.completion_tokens <= 16


def test_streaming_matches_the_whole_answer_and_ends_with_usage(client: openai.OpenAI) -> None:
    whole = ask(client, "prompt")
    chunks = list(ask(client, "prompt", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_an_adapter_trained_on_the_tiny_model_changes_its_answers(client: openai.OpenAI) -> None:
    with_adapter = ask(client, "lora")
    without = ask(client, "prompt")
    assert with_adapter.model_extra["ladder"]["adapter"] == "tiny-lora"
    assert with_adapter.choices[0].message.content != without.choices[0].message.content


def test_an_adapter_of_another_base_stops_start_up_naming_both(tmp_path: Path, tiny: Path) -> None:
    (tmp_path / "configs.yaml").write_text(CONFIG)
    smollm_manifest = {
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_fingerprint": {
            "architecture": "LlamaForCausalLM",
            "hidden_size": 576,
            "layers": 30,
            "vocab_size": 49152,
            "files_sha256": "8b9a1deb775d" + "0" * 52,
        },
    }
    adapter = random_lora(tiny, tmp_path / "lora")
    AdapterRegistry(tmp_path / "adapters").register("tiny-lora", adapter, smollm_manifest)
    settings = Settings(
        data_dir=tmp_path,
        config=tmp_path / "configs.yaml",
        base_model=str(tiny),
        cache_dir_override=models_cache_dir(),
    )
    from fastapi.testclient import TestClient

    with pytest.raises(ConfigurationError) as refused, TestClient(create_app(settings)):
        pass
    message = str(refused.value)
    assert "adapter tiny-lora@1 was trained on HuggingFaceTB/SmolLM2-135M-Instruct" in message
    assert f"but the base model is {tiny}" in message


def _ladder(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LADDER, *args],
        env={**os.environ, "LADDER_CACHE_DIR": str(models_cache_dir()), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param({"LADDER_BASE_MODEL": "/no/such/model"}, "not a model folder", id="source"),
        pytest.param({"LADDER_CONTEXT_WINDOW": "4096"}, "is larger than", id="window"),
    ],
)
def test_ladder_serve_refuses_a_bad_base_model_before_it_starts_in_one_line(
    tiny: Path, tmp_path: Path, setting: dict[str, str], expected: str
) -> None:
    env = {"LADDER_BASE_MODEL": str(tiny), "LADDER_DATA_DIR": str(tmp_path), **setting}
    result = _ladder(["serve", "--port", "9"], **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_models_show_describes_the_configured_base(tiny: Path, tmp_path: Path) -> None:
    result = _ladder(
        ["models", "show", "--json"], LADDER_BASE_MODEL=str(tiny), LADDER_DATA_DIR=str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["source"] == str(tiny)
    assert shown["fingerprint"]["architecture"] == "Qwen2ForCausalLM"
    assert shown["parameters"] == parameter_count(tiny)
    assert shown["context_window"] == shown["model_context_window"] == 1024
    assert shown["lora_modules"]["q_proj"] == [128, 128]
    assert any("<|turn_start|>" in line for line in shown["chat_template_head"])
    assert shown["adapters"] == {"fit": [], "other_base": []}
