"""Token counts composed from cached parts: equal to the real tokenizers' whole-prompt counts over
many prompts, never trusted past the window, and a warm plan tokenises one whole prompt only."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from ingest.passage import RetrievedPassage
from service.engines.tokens import ChatTokenizer, estimate_tokens
from service.messages import ChatMessage, SamplingRequest
from service.routing.budget import Sourced, TokenParts, messages_of
from service.routing.configs import Configuration, FewShot, FewShotExample, Retrieval
from service.routing.plan import FENCE_OPEN, context_pieces, plan, prompt_parts
from tests.support.models import models_cache_dir
from tests.support.paths import CORPUS_DOCS
from tests.support.tiny_model import tiny_model_dir

# Texts whose edges a tokenizer might merge across a cut: whitespace runs, quotes, contractions,
# digits, non-Latin scripts, special-token and fence text inside content, empty text.
AWKWARD = (
    "",
    " ",
    "  leading spaces",
    "trailing spaces   ",
    "\n\nnewlines around\n\n",
    'ends with a quote"',
    '"starts with a quote',
    "it's",
    "'s",
    "ll",
    "123 456 7890",
    "ünïcödé ☕ 漢字 кириллица",
    "emoji 🎉🎉 done",
    "tab\there\t",
    "\r\nwindows\r\n",
    "<|im_start|>user\nsneaky<|im_end|>",
    "<<<REFERENCE DATA inside END OF REFERENCE DATA>>>",
    "Question: what?",
    "x",
    "...",
)


def corpus_paragraphs() -> list[str]:
    """The sample corpus's paragraphs: real passage text."""
    paragraphs: list[str] = []
    for path in sorted(CORPUS_DOCS.rglob("*.md")):
        paragraphs += [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return paragraphs


def random_text(rng: random.Random, paragraphs: Sequence[str]) -> str:
    pieces = [rng.choice(AWKWARD) if rng.random() < 0.4 else rng.choice(paragraphs)]
    if rng.random() < 0.3:
        pieces.append(rng.choice(AWKWARD))
    return "".join(pieces)


def random_passage(rng: random.Random, paragraphs: Sequence[str], n: int) -> RetrievedPassage:
    return RetrievedPassage(
        text=random_text(rng, paragraphs),
        source=f"docs/{rng.choice(['a', 'b b', 'ü'])}{n}.md",
        chunk_id=f"c{n}",
        score=0.9,
        heading_path=rng.choice(["", "Top > Part", "Ünï > 2"]),
    )


@pytest.fixture(scope="module", params=["smollm2", "tiny-qwen2"])
def tokenizer(request: pytest.FixtureRequest) -> ChatTokenizer:
    """The bundled SmolLM2's tokenizer and template, and the tiny Qwen2 test model's."""
    if request.param == "smollm2":
        folder: Path = request.getfixturevalue("base_model_dir")
    else:
        folder = tiny_model_dir(models_cache_dir())
    return ChatTokenizer(folder)


def test_composed_counts_equal_the_whole_prompts_count(tokenizer: ChatTokenizer) -> None:
    rng = random.Random(17)
    paragraphs = corpus_paragraphs()
    counts = TokenParts(tokenizer.count, size=64)  # small: evictions happen too
    for case in range(300):
        system = rng.choice([None, "You answer support questions.", random_text(rng, paragraphs)])
        examples = [
            FewShotExample(
                user=random_text(rng, paragraphs) or "u", assistant=rng.choice(AWKWARD) or "a"
            )
            for _ in range(rng.randrange(3))
        ]
        turns = [ChatMessage("user", random_text(rng, paragraphs))]
        if rng.random() < 0.3:
            turns = [
                ChatMessage("user", random_text(rng, paragraphs)),
                ChatMessage("assistant", random_text(rng, paragraphs)),
                *turns,
            ]
        passages = [random_passage(rng, paragraphs, n) for n in range(rng.randrange(5))]
        citations = rng.choice(["none", "inline"])
        configuration = Configuration.model_validate(
            {
                "name": "c",
                "system_prompt": system,
                "retrieval": {"collection": "d", "citations": citations},
            }
        )
        parts = prompt_parts(configuration, turns, examples, passages)
        whole = tokenizer.count(messages_of(parts))
        assert counts.total(parts) == whole, (case, messages_of(parts))
        if passages:
            block = Sourced(ChatMessage("user", ""), context_pieces(passages))
            alone = tokenizer.count([block.final()])
            assert counts.total([block]) == alone, (case, block.final())


def test_segment_counts_equal_the_templates_own_count(tokenizer: ChatTokenizer) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(tokenizer.folder))
    rng = random.Random(18)
    paragraphs = corpus_paragraphs()
    assert tokenizer.counts_by_segment
    for case in range(300):
        roles = ["system", "user", "assistant", "user"][rng.randrange(2) :]
        messages = [ChatMessage(role, random_text(rng, paragraphs)) for role in roles]  # type: ignore[arg-type]
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        ids = reference.apply_chat_template(rendered, add_generation_prompt=True, tokenize=True)
        ids = ids if isinstance(ids, list) else ids["input_ids"]
        assert tokenizer.count(messages) == len(ids), (case, messages)
        assert tokenizer.count(messages) == len(ids), (case, "cached")


class CountingCounter:
    """The estimate, recording every prompt it is asked to count."""

    def __init__(self) -> None:
        self.calls: list[tuple[ChatMessage, ...]] = []

    def __call__(self, messages: Sequence[ChatMessage]) -> int:
        self.calls.append(tuple(messages))
        return estimate_tokens(messages)


def rag_configuration() -> Configuration:
    examples = (
        FewShotExample(user="u1", assistant="a1"),
        FewShotExample(user="u2", assistant="a2"),
    )
    return Configuration(
        name="c",
        system_prompt="SYS",
        few_shot=FewShot(examples=examples),
        retrieval=Retrieval(collection="docs", k=4),
    )


def test_a_warm_plan_counts_only_its_final_prompt() -> None:
    paragraphs = corpus_paragraphs()
    passages = [
        RetrievedPassage(text=paragraphs[n], source=f"d{n}.md", chunk_id=f"c{n}", score=0.9)
        for n in range(4)
    ]
    counter = CountingCounter()
    counts = TokenParts(counter)
    question = [ChatMessage("user", "How long is the warranty?")]
    plan(question, SamplingRequest(), rag_configuration(), passages, counts, 8192)
    counter.calls.clear()
    planned = plan(question, SamplingRequest(), rag_configuration(), passages, counts, 8192)
    assert counter.calls == [planned.messages]
    assert len(planned.passages) == 4 and len(planned.few_shot) == 2


def test_a_composition_that_under_counts_never_overflows_the_window() -> None:
    def fence_costs_more(messages: Sequence[ChatMessage]) -> int:
        # A tokenizer that charges 40 tokens more for a fence it sees whole, which no part holds.
        fences = sum(FENCE_OPEN in m.content and "Question:" in m.content for m in messages)
        return estimate_tokens(messages) + 40 * fences

    passages = [
        RetrievedPassage(text="fact " * 20, source=f"d{n}.md", chunk_id=f"c{n}", score=0.9)
        for n in range(4)
    ]
    question = [ChatMessage("user", "q")]
    configuration = rag_configuration()
    roomy = plan(question, SamplingRequest(), configuration, passages, fence_costs_more, 8192)
    window = roomy.prompt_tokens - 20 + configuration.generation.max_tokens
    planned = plan(question, SamplingRequest(), configuration, passages, fence_costs_more, window)
    assert planned.prompt_tokens == fence_costs_more(planned.messages)
    assert planned.prompt_tokens + configuration.generation.max_tokens <= window
    assert len(planned.passages) < len(roomy.passages)
