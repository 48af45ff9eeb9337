"""The official openai client and LlamaIndex against `ladder serve` on 127.0.0.1 (local engine)."""

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

from adapters.registry import AdapterRegistry
from tests.support.models import models_cache_dir
from tests.support.paths import CORPUS_DOCS, QA_FILE
from tests.support.processes import free_port, stop_process, wait_for_http

MARKER = "ZEBRA-42"
SYSTEM_PROMPT = "You are the Brightwater support assistant. Answer briefly."
CONFIG = f"""
configurations:
  base: {{}}
  prompt:
    system_prompt: {SYSTEM_PROMPT}
  few-shot:
    system_prompt: {SYSTEM_PROMPT}
    few_shot:
      examples:
        - {{user: "Where is my order?", assistant: "Please share your order number."}}
        - {{user: "Do you sell kettles?", assistant: "Yes, the Aurora range."}}
  rag:
    system_prompt: {SYSTEM_PROMPT}
    retrieval: {{collection: docs, k: 4, mode: hybrid, max_context_tokens: 600}}
  lora:
    adapter: marker
  lora+rag:
    adapter: marker
    retrieval: {{collection: docs, k: 2}}
"""
QUESTION = "What colour is the sky on a clear day?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, marker_adapter: Path) -> Iterator[str]:
    """`ladder serve` with the sample corpus ingested and the marker adapter registered."""
    data = tmp_path_factory.mktemp("served")
    (data / "configs.yaml").write_text(CONFIG)
    AdapterRegistry(data / "adapters").register("marker", marker_adapter, {"purpose": "test"})
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data),
        "LADDER_CONFIG": str(data / "configs.yaml"),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_DEBUG_PROMPTS": "true",
    }
    ladder = [sys.executable, "-m", "service.cli"]
    ingest = subprocess.run(
        [*ladder, "ingest", str(CORPUS_DOCS), "--collection", "docs", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ingest.returncode == 0, ingest.stderr
    port = free_port()
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(
        [*ladder, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ready", 180, process)
        yield url
    finally:
        stop_process(process)
        log.close()


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, model: str, question: str = QUESTION, **extra: object):  # type: ignore[no-untyped-def]
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=12,
        temperature=0,
        **extra,
    )


def test_models_lists_every_configuration_with_its_layers(client: openai.OpenAI) -> None:
    models = {model.id: model.model_extra for model in client.models.list().data}
    assert set(models) == {"base", "prompt", "few-shot", "rag", "lora", "lora+rag"}
    assert models["lora+rag"]["metadata"]["layers"] == ["rag", "adapter"]


def test_every_configuration_answers(client: openai.OpenAI) -> None:
    for model in ("base", "prompt", "few-shot", "rag", "lora", "lora+rag"):
        response = ask(client, model)
        assert response.choices[0].message.content, model
        assert response.model_extra["ladder"]["configuration"] == model
        assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_streaming_matches_the_whole_answer_and_ends_with_usage(client: openai.OpenAI) -> None:
    whole = ask(client, "prompt").choices[0].message.content
    stream = ask(client, "prompt", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_async_client_streams_and_completes(server: str) -> None:
    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(
            base_url=f"{server}/v1", api_key="x", max_retries=0
        ) as client:
            messages = [{"role": "user", "content": QUESTION}]
            whole = await client.chat.completions.create(
                model="base", messages=messages, max_tokens=10
            )
            stream = await client.chat.completions.create(
                model="base", messages=messages, max_tokens=10, stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content or "", "".join(pieces)

    whole, streamed = asyncio.run(run())
    assert whole and streamed == whole


def test_rag_citations_name_the_gold_source(client: openai.OpenAI) -> None:
    rows = [json.loads(line) for line in QA_FILE.read_text().splitlines()][::20]
    misses = []
    for row in rows:
        raw = client.chat.completions.with_raw_response.create(
            model="rag", messages=[{"role": "user", "content": row["question"]}], max_tokens=4
        )
        assert raw.headers["x-ladder-config"] == "rag" and raw.headers["x-request-id"]
        sources = [c["source"] for c in raw.parse().model_extra["ladder"]["citations"]]
        if row["source"] not in sources:
            misses.append((row["question"], row["source"], sources))
    assert not misses


def test_system_prompt_and_few_shot_turns_reach_the_model(client: openai.OpenAI) -> None:
    response = ask(client, "few-shot", extra_headers={"x-ladder-debug": "1"})
    prompt = response.model_extra["ladder"]["prompt"]
    assert prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert [m["content"] for m in prompt[1:5]] == [
        "Where is my order?",
        "Please share your order number.",
        "Do you sell kettles?",
        "Yes, the Aurora range.",
    ]
    assert prompt[-1] == {"role": "user", "content": QUESTION}


def test_the_adapter_emits_its_marker_and_the_base_model_does_not(client: openai.OpenAI) -> None:
    questions = ["How do I reset my kettle?", "What is your refund policy?", QUESTION]
    for question in questions:
        assert MARKER in (ask(client, "lora", question).choices[0].message.content or "")
        assert MARKER not in (ask(client, "base", question).choices[0].message.content or "")
    adapter = ask(client, "lora").model_extra["ladder"]["adapter"]
    assert adapter == "marker"


def test_llamaindex_openailike_works_unchanged(server: str) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="rag",
        api_base=f"{server}/v1",
        api_key="x",
        is_chat_model=True,
        max_tokens=8,
        timeout=120,
    )
    reply = llm.chat([ChatMessage(role="user", content="What does the Aurora K3 cost?")])
    assert reply.message.content
    streamed = "".join(
        r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content="Hi")])
    )
    assert streamed


def test_metrics_and_readiness_reflect_the_traffic(server: str, client: openai.OpenAI) -> None:
    ask(client, "prompt")
    assert httpx.get(f"{server}/ready").json() == {"ready": True, "engine": True, "index": True}
    metrics = httpx.get(f"{server}/metrics").text
    assert 'ladder_requests_total{adapter="base",configuration="prompt",status="200"}' in metrics
    assert "ladder_retrieval_seconds_count" in metrics
    assert "ladder_time_to_first_token_seconds" in metrics
