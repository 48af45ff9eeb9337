"""Nothing that embeds, searches or tokenises much runs on the event loop: a chat request's
retrieval, few-shot selection and token counting happen in a worker thread, so the loop stays free
for other requests however long the prompt; a repeated query is embedded once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.index import Index
from ingest.query_cache import QueryCachingEmbedder
from service.chat.examples import ExampleSelector
from service.chat.limits import ChatLimits
from service.chat.metrics import Metrics
from service.chat.protocol import ChatCompletionRequest
from service.chat.serving import INLINE_PLAN_CHARS, ChatService
from service.messages import ChatMessage
from service.routing.configs import ConfigSet, Configuration
from tests.support.scripted_engine import ScriptedEngine


def on_the_loop() -> bool:
    """Whether the caller runs in a thread whose event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass
class LoopProbe:
    """Where each probed call ran: True for the event loop's thread."""

    calls: dict[str, list[bool]] = field(default_factory=dict)

    def saw(self, what: str) -> None:
        self.calls.setdefault(what, []).append(on_the_loop())


@dataclass
class ProbedEngine(ScriptedEngine):
    probe: LoopProbe = field(default_factory=LoopProbe)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        self.probe.saw("count_tokens")
        return super().count_tokens(messages)


class ProbedEmbedder:
    """The index's embedder, probed."""

    def __init__(self, embedder: Any, probe: LoopProbe) -> None:
        self.wrapped, self.probe = embedder, probe
        self.name, self.backend, self.dimension = (
            embedder.name,
            embedder.backend,
            embedder.dimension,
        )

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        self.probe.saw("embed")
        return self.wrapped.embed(texts, batch_size)


CONFIGURATIONS = {
    "rag": {"system_prompt": "Be brief.", "retrieval": {"collection": "docs", "k": 3}},
    "plain": {"system_prompt": "Be brief."},
    "similar": {
        "few_shot": {
            "examples": [
                {"user": "my kettle leaks", "assistant": "hardware"},
                {"user": "reset my password", "assistant": "account"},
            ],
            "select": "similar",
            "count": 1,
        }
    },
}


def test_retrieval_and_token_counting_run_off_the_event_loop(corpus_index: Index) -> None:
    engine = ProbedEngine()
    probe = engine.probe
    index = Index(corpus_index.location, ProbedEmbedder(corpus_index.embedder, probe))
    configurations = {
        name: Configuration.model_validate({"name": name, **fields})
        for name, fields in CONFIGURATIONS.items()
    }
    configs = ConfigSet(configurations, Path("x.yaml"), "d", {})
    selector = ExampleSelector(lambda: index.embedder)
    service = ChatService(
        lambda: configs, engine, index, Metrics(), ChatLimits(), examples=selector
    )

    async def ask(model: str) -> list[int]:
        # Without retrieval, only a long prompt is worth a thread (INLINE_PLAN_CHARS).
        question = "What does K3 cost? " * (200 if model == "plain" else 1)
        assert len(question) > INLINE_PLAN_CHARS or model != "plain"
        body = {"model": model, "messages": [{"role": "user", "content": question}]}
        prepared = await service.prepare(ChatCompletionRequest.model_validate(body))
        return [c.number for c in prepared.info.citations]

    async def ask_all() -> list[list[int]]:
        return [await ask(model) for model in CONFIGURATIONS]

    cited = asyncio.run(ask_all())
    assert cited[0], "the rag configuration retrieved nothing"
    assert set(probe.calls) == {"count_tokens", "embed"}
    assert not any(probe.calls["count_tokens"]), "tokens were counted on the event loop"
    assert not any(probe.calls["embed"]), "a query was embedded on the event loop"


def test_a_repeated_query_is_embedded_once(corpus_index: Index) -> None:
    probe = LoopProbe()
    cached = QueryCachingEmbedder(ProbedEmbedder(corpus_index.embedder, probe), size=2)
    index = Index(corpus_index.location, cached)
    first = index.search("How long is the warranty?", "docs", k=2)
    again = index.search("How long is the warranty?", "docs", k=2)
    assert [p.chunk_id for p in again] == [p.chunk_id for p in first]
    assert len(probe.calls["embed"]) == 1
    for query in ("one", "two", "three"):
        index.search(query, "docs", k=1)
    index.search("How long is the warranty?", "docs", k=2)  # evicted by the three since
    assert len(probe.calls["embed"]) == 5
