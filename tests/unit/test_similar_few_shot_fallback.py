"""An embedder that cannot be reached (a remote embeddings server down) costs `select: similar`
its nearest examples, not the request: the fixed selection is used instead of a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ingest.index import IndexUnavailable
from service.chat.examples import ExampleSelector
from service.chat.limits import ChatLimits
from service.chat.metrics import Metrics
from service.chat.protocol import ChatCompletionRequest
from service.chat.serving import ChatService
from service.routing.configs import ConfigSet, Configuration
from tests.support.scripted_engine import ScriptedEngine


class UnreachableEmbedder:
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        raise IndexUnavailable("the embeddings server cannot be reached")


def test_an_unreachable_embedder_falls_back_to_the_fixed_examples() -> None:
    examples = [{"user": f"question {n}", "assistant": f"label {n}"} for n in range(3)]
    few_shot = {"examples": examples, "select": "similar", "count": 2}
    configuration = Configuration.model_validate({"name": "c", "few_shot": few_shot})
    configs = ConfigSet({"c": configuration}, Path("x.yaml"), "d", {})
    selector = ExampleSelector(UnreachableEmbedder)
    service = ChatService(
        lambda: configs, ScriptedEngine(), None, Metrics(), ChatLimits(), examples=selector
    )
    body = {"model": "c", "messages": [{"role": "user", "content": "question 2"}]}
    prepared = asyncio.run(service.prepare(ChatCompletionRequest.model_validate(body)))
    assert sorted(e.user for e in prepared.plan.few_shot) == ["question 0", "question 1"]
