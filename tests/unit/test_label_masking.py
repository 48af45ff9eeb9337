"""`ladder train` learns the answer and the chat template's own end of turn, whatever the base
model: the tiny Qwen2 closes a turn with <|turn_end|>, which is neither its eos nor its pad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from adapters.data import Example
from adapters.train import ChatTemplateError, encode_example
from tests.support.models import models_cache_dir
from tests.support.tiny_model import EOS, TURN_END, tiny_model_dir

ANSWER = "The kettle ships in two days."
EXAMPLE = Example(
    (
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "When does my kettle ship?"},
        {"role": "assistant", "content": ANSWER},
    ),
    line=1,
)


@pytest.fixture()
def tokenizer() -> Any:
    """A fresh copy of the tiny model's tokenizer (tests may swap its chat template)."""
    return AutoTokenizer.from_pretrained(str(tiny_model_dir(models_cache_dir())))


def learned(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(masked ids, learned ids), checking the learned ones are exactly a suffix of the ids."""
    cut = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label != -100 for label in labels[cut:])
    assert labels[cut:] == ids[cut:]
    return ids[:cut], labels[cut:]


def test_the_answer_and_the_templates_turn_end_are_learned_not_the_eos(tokenizer: Any) -> None:
    ids, labels = encode_example(tokenizer, EXAMPLE)
    prompt, answer = learned(ids, labels)
    turn_end, eos = tokenizer.convert_tokens_to_ids([TURN_END, EOS])
    assert turn_end != eos == tokenizer.pad_token_id
    assert answer[-1] == turn_end and eos not in answer
    assert tokenizer.decode(answer) == ANSWER + TURN_END
    rendered = tokenizer.apply_chat_template(
        list(EXAMPLE.messages[:-1]), add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert prompt == list(rendered)


def test_a_template_that_closes_no_turn_learns_the_eos_after_the_answer(tokenizer: Any) -> None:
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    ids, labels = encode_example(tokenizer, EXAMPLE)
    _, answer = learned(ids, labels)
    assert tokenizer.decode(answer) == ANSWER + EOS


def test_a_template_that_rewrites_the_prompt_once_answered_is_refused(tokenizer: Any) -> None:
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}\n{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match="cannot be told"):
        encode_example(tokenizer, EXAMPLE)


def test_smollm2_still_learns_its_answer_up_to_im_end(base_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    ids, labels = encode_example(tokenizer, EXAMPLE)
    _, answer = learned(ids, labels)
    assert tokenizer.decode(answer) == ANSWER + "<|im_end|>"
    assert answer[-1] == tokenizer.eos_token_id
