"""The local engine honours logprobs, top_logprobs, logit_bias, the penalties and n: the official
openai client against the app on the bundled SmolLM2, greedy unless a test says otherwise."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from service.api.app import create_app
from service.engines.local import LocalEngine
from service.settings import Settings

pytestmark = pytest.mark.slow

CONFIG = "configurations:\n  base: {}\n"
QUESTION = "What colour is the sky on a clear day?"
REPEAT = "Repeat after me: yes yes yes yes yes yes yes yes"


@pytest.fixture(scope="module")
def engine(base_model_dir: Path) -> Iterator[LocalEngine]:
    local = LocalEngine(base_model_dir, threads=2)
    asyncio.run(local.wait_until_loaded())
    yield local
    asyncio.run(local.aclose())


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, engine: LocalEngine
) -> Iterator[openai.OpenAI]:
    data = tmp_path_factory.mktemp("parameters")
    (data / "configs.yaml").write_text(CONFIG)
    settings = Settings(data_dir=data, config=data / "configs.yaml")
    with TestClient(create_app(settings, engine=engine)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http)


def ask(client: openai.OpenAI, question: str = QUESTION, **fields: Any) -> Any:
    fields = {"temperature": 0, "max_tokens": 16, **fields}
    messages = [{"role": "user", "content": question}]
    return client.chat.completions.create(model="base", messages=messages, **fields)  # type: ignore[arg-type]


def test_logprobs_have_openais_shape_and_the_greedy_token_is_the_likeliest(
    client: openai.OpenAI,
) -> None:
    choice = ask(client, logprobs=True, top_logprobs=5).choices[0]

    content = choice.logprobs.content
    assert content, "no logprobs"
    assert "".join(entry.token for entry in content) == choice.message.content
    for entry in content:
        tops = entry.top_logprobs
        assert len(tops) == 5
        assert [top.logprob for top in tops] == sorted((t.logprob for t in tops), reverse=True)
        assert entry.logprob == pytest.approx(tops[0].logprob)  # greedy took the likeliest
        assert entry.token == tops[0].token
        assert 0 < sum(math.exp(top.logprob) for top in tops) <= 1.0 + 1e-6
        assert bytes(entry.bytes or []).decode("utf-8") == entry.token


def test_without_logprobs_a_choice_has_none(client: openai.OpenAI) -> None:
    assert ask(client).choices[0].logprobs is None


def test_streamed_chunks_carry_the_logprobs_of_their_text(client: openai.OpenAI) -> None:
    whole = ask(client, logprobs=True).choices[0]
    chunks = [c for c in ask(client, logprobs=True, stream=True) if c.choices]

    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    tokens = [
        e.token for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert text == whole.message.content
    assert tokens == [entry.token for entry in whole.logprobs.content]


def test_logit_bias_minus_100_on_the_greedy_first_token_changes_it(
    client: openai.OpenAI, base_model_dir: Path
) -> None:
    first = ask(client, logprobs=True).choices[0].logprobs.content[0].token
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    (token_id,) = tokenizer.encode(first, add_special_tokens=False)

    biased = ask(client, logprobs=True, logit_bias={str(token_id): -100})

    assert biased.choices[0].logprobs.content[0].token != first


def test_a_logit_bias_token_outside_the_vocabulary_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, logit_bias={"99999999": 1})

    assert refused.value.param == "logit_bias"


def test_n_with_temperature_gives_that_many_different_choices(client: openai.OpenAI) -> None:
    answer = ask(client, n=2, temperature=1.0, seed=7, max_tokens=24)

    assert [choice.index for choice in answer.choices] == [0, 1]
    texts = [choice.message.content for choice in answer.choices]
    assert all(texts) and texts[0] != texts[1]
    assert answer.usage.completion_tokens > 24  # both choices counted


def test_n_with_a_seed_is_reproducible(client: openai.OpenAI) -> None:
    first = ask(client, n=2, temperature=1.0, seed=11)
    second = ask(client, n=2, temperature=1.0, seed=11)

    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty"])
def test_a_penalty_breaks_a_repetitive_greedy_answer(client: openai.OpenAI, penalty: str) -> None:
    plain = ask(client, REPEAT, max_tokens=30).choices[0].message.content
    penalised = ask(client, REPEAT, max_tokens=30, **{penalty: 2.0}).choices[0].message.content

    def most_repeated(text: str) -> int:
        return Counter(text.lower().split()).most_common(1)[0][1]

    assert most_repeated(plain) >= 5, plain  # the prompt does make greedy decoding repeat
    assert most_repeated(penalised) < most_repeated(plain), penalised
