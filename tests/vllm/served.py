"""What the vLLM test modules share: vLLM started as `ladder vllm up` starts it, and a
`ladder serve` (vllm engine) in front of it; both on 127.0.0.1, both stopped by PID."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

from adapters.registry import AdapterRegistry
from service.engines.vllm_server import start, stop
from service.settings import Settings
from tests.support.models import models_cache_dir
from tests.support.processes import free_port, spawn, stop_process, wait_for_http

ADMIN_TOKEN = "vllm-suite-admin-token"
# The configurations of the shared adapter-less stack (conftest's plain_stack): the base model,
# and an output layer of three choices.
REMEDIES = ("refund", "repair", "replace")
PLAIN_CONFIG = (
    "configurations:\n  base: {}\n"
    f"  remedy:\n    output:\n      choice: {json.dumps(list(REMEDIES))}\n"
)


@dataclass(frozen=True)
class Stack:
    """A running vLLM and the `ladder serve` in front of it."""

    settings: Settings
    registry: AdapterRegistry
    vllm_url: str
    ladder_url: str


def vllm_settings(data: Path, **options: object) -> Settings:
    """Settings for a vLLM on a free port with its state under data (and the shared model cache)."""
    port = free_port()
    return Settings(
        data_dir=data,
        cache_dir_override=models_cache_dir(),
        vllm_port=port,
        vllm_url=f"http://127.0.0.1:{port}",
        vllm_start_timeout_s=600,
        **options,
    )


@contextmanager
def served_stack(settings: Settings, progress: list[str] | None = None) -> Iterator[Stack]:
    """vLLM started by the runtime (its messages also kept in progress), then `ladder serve` on
    the same settings and DATA_DIR/configs.yaml, once its /ready answers 200."""

    def report(line: str) -> None:
        print(line)
        if progress is not None:
            progress.append(line)

    start(settings, report)
    try:
        with ladder_serving(settings) as ladder_url:
            registry = AdapterRegistry(settings.adapters_root)
            yield Stack(settings, registry, settings.vllm_url, ladder_url)
    finally:
        stop(settings, print)


@contextmanager
def ladder_serving(settings: Settings, **extra: str) -> Iterator[str]:
    """`ladder serve` (vllm engine) on the settings' data dir and vLLM, and extra LADDER_
    variables (as `LADDER_VLLM_URLS`); its URL once /ready answers 200."""
    data = settings.data_dir
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data),
        "LADDER_CONFIG": str(data / "configs.yaml"),
        "LADDER_CACHE_DIR": str(settings.cache_dir),
        "LADDER_ENGINE": "vllm",
        "LADDER_VLLM_URL": settings.vllm_url,
        "LADDER_ADMIN_TOKEN": ADMIN_TOKEN,
        **extra,
    }
    if settings.base_model:
        env["LADDER_BASE_MODEL"] = settings.base_model
    port = free_port()
    log = data / "ladder.log"
    process = spawn([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], log, env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ready", 180, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def served_models(stack: Stack) -> dict[str, dict[str, object]]:
    """vLLM's /v1/models entries by id: the base model and every loaded adapter."""
    listed = httpx.get(f"{stack.vllm_url}/v1/models", timeout=10).json()["data"]
    return {str(model["id"]): model for model in listed}


def ask(client: openai.OpenAI, model: str, question: str, stream: bool = False) -> str:
    """One greedy answer of at most 12 tokens, whole or streamed."""
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": question}
    ]
    if not stream:
        response = client.chat.completions.create(
            model=model, messages=messages, max_tokens=12, temperature=0
        )
        return response.choices[0].message.content or ""
    chunks = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, stream=True
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
