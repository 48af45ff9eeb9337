"""The local engine's logits processors on small tensors: OpenAI's penalties and logit_bias,
log-probabilities in OpenAI's shape, and token ids checked against the vocabulary."""

from __future__ import annotations

import math

import pytest
import torch

from service.engines.sampling import (
    IMPOSSIBLE_LOGPROB,
    BiasProcessor,
    LogprobRecorder,
    PenaltyProcessor,
    check_logit_bias,
    generation_config,
    logits_processors,
    token_bytes,
    token_logprob,
)
from service.errors import InvalidRequest
from service.messages import SamplingParams


def test_penalties_follow_openais_additive_definition_over_generated_tokens_only() -> None:
    prompt = [3, 3, 3]  # the prompt's tokens are never penalised
    generated = [1, 2, 2]
    scores = torch.zeros(1, 5)

    penalised = PenaltyProcessor(len(prompt), presence=0.5, frequency=0.25)(
        torch.tensor([prompt + generated]), scores
    )

    # logit - frequency * count - presence * (count > 0)
    assert penalised.tolist() == [[0.0, -0.75, -1.0, 0.0, 0.0]]


def test_negative_penalties_raise_repeated_tokens() -> None:
    penalised = PenaltyProcessor(0, presence=-1.0, frequency=-1.0)(
        torch.tensor([[4]]), torch.zeros(1, 5)
    )

    assert penalised[0, 4] == 2.0


def test_logit_bias_adds_to_the_named_tokens_only() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0]])

    biased = BiasProcessor([(0, 5.0), (3, -100.0)])(torch.tensor([[0]]), scores)

    assert biased.tolist() == [[6.0, 2.0, 3.0, -96.0]]
    assert scores.tolist() == [[1.0, 2.0, 3.0, 4.0]]  # the input is left alone


@pytest.mark.parametrize("token", [-1, 4])
def test_a_logit_bias_token_outside_the_vocabulary_is_refused(token: int) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_logit_bias([(token, 1.0)], vocab_size=4)

    assert refused.value.param == "logit_bias"


def test_logprobs_are_recorded_after_bias_and_before_temperature() -> None:
    recorder = LogprobRecorder()
    sampling = SamplingParams(temperature=0.5, top_p=0.5, logit_bias=((0, 10.0),))
    processors = logits_processors(sampling, 1, recorder)

    out = processors(torch.tensor([[1]]), torch.zeros(1, 4))

    expected = torch.log_softmax(torch.tensor([10.0, 0.0, 0.0, 0.0]), dim=-1)
    assert torch.allclose(recorder.last, expected)
    assert out[0, 0] == 20.0  # temperature 0.5 ran after the bias
    assert torch.isinf(out[0, 1:]).all()  # top_p 0.5 kept only the likeliest token


def test_greedy_sampling_builds_no_temperature_or_top_p_step() -> None:
    assert len(logits_processors(SamplingParams(temperature=0.0, top_p=0.5), 1, None)) == 0


def test_a_token_entry_has_the_chosen_logprob_and_the_likeliest_alternatives() -> None:
    logprobs = torch.log_softmax(torch.tensor([0.0, 3.0, 1.0, float("-inf")]), dim=-1)

    entry = token_logprob(logprobs, 3, 2, lambda token: (f"t{token}", (token,)))

    assert entry.token == "t3"
    assert entry.logprob == IMPOSSIBLE_LOGPROB  # -inf is not JSON
    assert [alt.token for alt in entry.top_logprobs] == ["t1", "t2"]
    assert math.isclose(entry.top_logprobs[0].logprob, float(logprobs[1]))
    assert sum(math.exp(alt.logprob) for alt in entry.top_logprobs) <= 1.0


def test_token_bytes_come_from_byte_level_pieces_even_for_part_of_a_character() -> None:
    # "é" is C3 A9; byte-level BPE spells byte C3 as "Ã" and A9 as "©".
    assert token_bytes("Ã", "\ufffd") == (0xC3,)
    assert token_bytes("Ġhi", " hi") == (0x20, 0x68, 0x69)
    assert token_bytes("▁hi", " hi") == tuple(b" hi")  # not byte-level: its text


def test_the_models_own_sampling_defaults_do_not_reorder_ours() -> None:
    """A model whose generation_config.json declares a temperature: ours still runs after
    logit_bias (generate would otherwise put its temperature step first)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = {"hidden_size": 16, "intermediate_size": 16, "num_attention_heads": 2}
    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, num_hidden_layers=1, **shape))
    model.generation_config.temperature = 0.3
    sampling = SamplingParams(temperature=0.5, logit_bias=((3, 10.0),))

    out = model.generate(
        input_ids=torch.tensor([[1, 2]]),
        generation_config=generation_config(sampling, 1, frozenset({0})),
        logits_processor=logits_processors(sampling, 2, None),
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
    )

    expected = out.logits[0].clone()
    expected[0, 3] += 10.0
    assert torch.allclose(out.scores[0], expected / 0.5)
