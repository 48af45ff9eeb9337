"""`few_shot.select: similar`: the pool's examples nearest the request, nearest last, each prompt
once, trimmed least-similar first; the pool is embedded once per content; `fixed` is unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ingest.embedder import Embedder
from service.chat.examples import ExampleSelector
from service.chat.limits import ChatLimits
from service.chat.metrics import Metrics
from service.chat.protocol import ChatCompletionRequest
from service.chat.serving import ChatService
from service.engines.tokens import estimate_tokens
from service.errors import ConfigurationError
from service.messages import ChatMessage, SamplingRequest
from service.routing import plan as routing
from service.routing.configs import (
    ConfigSet,
    Configuration,
    FewShot,
    FewShotExample,
    load_configurations,
)
from service.routing.plan import Plan
from tests.support.scripted_engine import ScriptedEngine

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = ROOT / "corpus" / "tasks" / "support-triage"

POOL = (
    FewShotExample(user="My kettle is leaking water all over the counter.", assistant="kettle"),
    FewShotExample(user="Please send me a copy of my last invoice.", assistant="invoice"),
    FewShotExample(user="I forgot my password and cannot log in to my account.", assistant="pw"),
    FewShotExample(user="The toaster caught fire and there is smoke everywhere!", assistant="fire"),
    FewShotExample(
        user="Where is my parcel? Tracking has not moved in a week.", assistant="parcel"
    ),
)
PASSWORD_QUERY = "I can't sign in, how do I reset my password?"


class CountingEmbedder:
    """The real embedder, counting the texts it embeds, to see when the pool is embedded."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.texts = 0

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.texts += len(texts)
        return self.embedder.embed(texts, batch_size)


@pytest.fixture
def counting(embedder: Embedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


@pytest.fixture
def selector(counting: CountingEmbedder) -> ExampleSelector:
    return ExampleSelector(lambda: counting)


def similar(count: int, examples: Sequence[FewShotExample] = POOL) -> Configuration:
    few_shot = FewShot(examples=tuple(examples), count=count, select="similar")
    return Configuration(name="c", few_shot=few_shot)


def shots(
    configuration: Configuration, chosen: Sequence[FewShotExample] | None, window: int = 4096
) -> tuple[list[str], Plan]:
    """The few-shot user turns of the plan, in prompt order, and the plan."""
    result = routing.plan(
        [ChatMessage("user", PASSWORD_QUERY)],
        SamplingRequest(max_tokens=16),
        configuration,
        [],
        estimate_tokens,
        window,
        chosen,
    )
    return [m.content for m in result.messages[:-1] if m.role == "user"], result


def test_the_nearest_examples_are_chosen_and_the_nearest_sits_right_before_the_question(
    selector: ExampleSelector,
) -> None:
    configuration = similar(count=2)
    assert configuration.few_shot is not None
    chosen = selector.nearest(configuration.few_shot, PASSWORD_QUERY)
    users, result = shots(configuration, chosen)
    assert len(users) == 2
    assert users[-1] == POOL[2].user
    assert result.messages[-2] == ChatMessage("assistant", "pw")
    assert result.messages[-1] == ChatMessage("user", PASSWORD_QUERY)
    assert POOL[1].user not in users  # an invoice is further from a password than a login is


def test_another_request_gets_other_examples(selector: ExampleSelector) -> None:
    configuration = similar(count=1)
    assert configuration.few_shot is not None
    chosen = selector.nearest(configuration.few_shot, "Smoke came out of my toaster, it burned!")
    assert [e.assistant for e in chosen] == ["fire"]


def test_count_is_respected(selector: ExampleSelector) -> None:
    for count in (1, 3, 5):
        configuration = similar(count)
        assert configuration.few_shot is not None
        assert len(selector.nearest(configuration.few_shot, PASSWORD_QUERY)) == count


def test_an_identical_prompt_is_used_once(selector: ExampleSelector) -> None:
    duplicate = FewShotExample(user=POOL[2].user, assistant="pw again")
    configuration = similar(3, (*POOL, duplicate))
    assert configuration.few_shot is not None
    chosen = selector.nearest(configuration.few_shot, PASSWORD_QUERY)
    assert len(chosen) == 3
    assert [e.user for e in chosen].count(POOL[2].user) == 1


def test_budget_trimming_drops_the_least_similar_example_first(selector: ExampleSelector) -> None:
    configuration = similar(count=3)
    assert configuration.few_shot is not None
    chosen = selector.nearest(configuration.few_shot, PASSWORD_QUERY)
    users, full = shots(configuration, chosen)
    assert len(users) == 3
    # A window that holds one example fewer than all three.
    window = full.prompt_tokens + 16 - 1
    trimmed_users, trimmed = shots(configuration, chosen, window)
    assert trimmed_users == users[1:]
    assert trimmed_users[-1] == POOL[2].user
    assert trimmed.few_shot_tokens < full.few_shot_tokens


def test_fixed_keeps_file_order_and_trims_from_the_end() -> None:
    configuration = Configuration(name="c", few_shot=FewShot(examples=POOL, count=3))
    assert configuration.few_shot is not None and configuration.few_shot.select == "fixed"
    users, full = shots(configuration, None)
    assert users == [e.user for e in POOL[:3]]
    trimmed_users, _ = shots(configuration, None, full.prompt_tokens + 16 - 1)
    assert trimmed_users == [e.user for e in POOL[:2]]


def write_configs(tmp_path: Path, few_shot: str) -> Path:
    path = tmp_path / "configs.yaml"
    path.write_text(f"configurations:\n  c:\n    few_shot: {few_shot}\n")
    return path


def write_pool(path: Path, examples: Sequence[FewShotExample]) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": e.user},
                {"role": "assistant", "content": e.assistant},
            ]
        }
        for e in examples
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize(
    ("few_shot", "field"),
    [
        ("{file: pool.jsonl, count: 2, select: nearest}", "few_shot.select"),
        ("{file: pool.jsonl, select: similar}", "few_shot"),
    ],
)
def test_a_bad_select_is_a_configuration_error_naming_the_field(
    tmp_path: Path, few_shot: str, field: str
) -> None:
    write_pool(tmp_path / "pool.jsonl", POOL)
    with pytest.raises(ConfigurationError, match=f"configuration 'c': field {field}:"):
        load_configurations(write_configs(tmp_path, few_shot), [], None)


def pool_of(configs: ConfigSet) -> FewShot:
    found = configs.get("c")
    assert found is not None and found.few_shot is not None
    return found.few_shot


def test_the_pool_is_embedded_once_per_file_content_and_again_when_it_changes(
    tmp_path: Path, selector: ExampleSelector, counting: CountingEmbedder
) -> None:
    write_pool(tmp_path / "pool.jsonl", POOL)
    path = write_configs(tmp_path, "{file: pool.jsonl, count: 1, select: similar}")
    selector.nearest(pool_of(load_configurations(path, [], None)), PASSWORD_QUERY)
    assert counting.texts == len(POOL) + 1
    # A reload of the same file: only the query is embedded.
    selector.nearest(pool_of(load_configurations(path, [], None)), PASSWORD_QUERY)
    assert counting.texts == len(POOL) + 2
    login = FewShotExample(user="Reset my password please, I cannot sign in.", assistant="new")
    write_pool(tmp_path / "pool.jsonl", (*POOL, login))
    chosen = selector.nearest(pool_of(load_configurations(path, [], None)), PASSWORD_QUERY)
    assert counting.texts == len(POOL) + 2 + len(POOL) + 1 + 1
    assert chosen == (login,)


def test_the_shipped_similar_rung_draws_on_training_rows_and_never_on_held_out_ones() -> None:
    configs = load_configurations(ROOT / "service" / "configurations.yaml", [], None)
    configuration = configs.get("triage-few-shot-similar")
    assert configuration is not None and configuration.few_shot is not None
    few_shot = configuration.few_shot
    assert few_shot.select == "similar" and few_shot.count == 5
    assert few_shot.file is not None and few_shot.file.resolve() == TRIAGE / "train.jsonl"
    pool = {e.user.strip() for e in few_shot.examples}
    held_out = {
        json.loads(line)["messages"][0]["content"].strip()
        for line in (TRIAGE / "heldout.jsonl").read_text().splitlines()
        if line.strip()
    }
    assert len(pool) > 100
    assert not pool & held_out


def test_the_chat_service_sends_the_nearest_example_last(selector: ExampleSelector) -> None:
    engine = ScriptedEngine()
    engine.enqueue("ok")
    configs = ConfigSet({"c": similar(count=2)}, Path("x.yaml"), "d", {})
    service = ChatService(lambda: configs, engine, None, Metrics(), ChatLimits(), examples=selector)
    body = {"model": "c", "messages": [{"role": "user", "content": PASSWORD_QUERY}]}

    async def ask() -> None:
        await service.complete(await service.prepare(ChatCompletionRequest.model_validate(body)))

    asyncio.run(ask())
    sent = engine.history[-1].messages
    assert sent[-3:] == (
        ChatMessage("user", POOL[2].user),
        ChatMessage("assistant", "pw"),
        ChatMessage("user", PASSWORD_QUERY),
    )
