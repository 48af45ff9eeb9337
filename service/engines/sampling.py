"""The local engine's logits pipeline: OpenAI's penalties and logit_bias, an output constraint,
log-probabilities, then temperature and top_p, as transformers logits processors.

Order, per step: penalties -> logit_bias -> constraint -> (logprobs recorded) -> temperature ->
top_p. Log-probabilities are those of the distribution after penalties, bias and constraint and
before temperature and top_p, so they do not depend on how the token was drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from service.engines.base import TokenLogprob
from service.errors import InvalidRequest
from service.messages import SamplingParams

# OpenAI's stand-in for the log-probability of a token that cannot be drawn (JSON has no -inf).
IMPOSSIBLE_LOGPROB = -9999.0


class PenaltyProcessor:
    """OpenAI's presence and frequency penalties: each token's logit is lowered by
    `frequency_penalty * count + presence_penalty * (count > 0)`, counting only generated tokens."""

    def __init__(self, prompt_length: int, presence: float, frequency: float) -> None:
        self._prompt_length = prompt_length
        self._presence = presence
        self._frequency = frequency

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self._prompt_length :]
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=scores.dtype)
        )
        return scores - self._frequency * counts - self._presence * (counts > 0).to(scores.dtype)


class BiasProcessor:
    """OpenAI's logit_bias: a fixed amount added to the logits of the given token ids."""

    def __init__(self, bias: Sequence[tuple[int, float]]) -> None:
        self._ids = [token for token, _ in bias]
        self._amounts = [amount for _, amount in bias]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        amounts = torch.tensor(self._amounts, dtype=scores.dtype, device=scores.device)
        biased = scores.clone()
        biased[:, self._ids] += amounts
        return biased


class LogprobRecorder:
    """Keeps the log-softmax of the scores it sees (the last step's), leaving them unchanged."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.last = torch.log_softmax(scores[0].float(), dim=-1)
        return scores


def check_logit_bias(bias: Sequence[tuple[int, float]], vocab_size: int) -> None:
    """Refuses token ids the model's vocabulary does not have."""
    outside = sorted(token for token, _ in bias if not 0 <= token < vocab_size)
    if outside:
        raise InvalidRequest(
            f"logit_bias names token ids outside the vocabulary (size {vocab_size}): {outside[:5]}",
            param="logit_bias",
        )


def logits_processors(
    sampling: SamplingParams,
    prompt_length: int,
    recorder: LogprobRecorder | None,
    constraint: Any | None = None,
) -> Any:
    """The transformers LogitsProcessorList for one generation, in the order above. Temperature
    and top_p are built here rather than by generate, so they run after the rest."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    steps: list[Any] = []
    if sampling.presence_penalty or sampling.frequency_penalty:
        penalties = (sampling.presence_penalty, sampling.frequency_penalty)
        steps.append(PenaltyProcessor(prompt_length, *penalties))
    if sampling.logit_bias:
        steps.append(BiasProcessor(sampling.logit_bias))
    if constraint is not None:
        steps.append(constraint)
    if recorder is not None:
        steps.append(recorder)
    if sampling.temperature > 0:
        steps.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_p < 1.0:
            steps.append(TopPLogitsWarper(sampling.top_p))
    return LogitsProcessorList(steps)


def generation_config(
    sampling: SamplingParams, max_new_tokens: int, eos_ids: frozenset[int]
) -> Any:
    """Maps sampling parameters to transformers; temperature 0 means greedy. Temperature and
    top_p are logits processors (above), so they run after the others."""
    from transformers import GenerationConfig

    greedy = sampling.temperature <= 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        # Neutral, not unset: generate fills unset values from the model's generation_config.json
        # (e.g. temperature 0.7), which would apply on top of ours; an unset top_k would be 50.
        temperature=None if greedy else 1.0,
        top_p=None if greedy else 1.0,
        top_k=None if greedy else 0,
        # Every end token the model declares (SmolLM2: <|im_end|>; others end a turn with a token
        # other than eos); padding never happens at batch size 1.
        eos_token_id=sorted(eos_ids),
        pad_token_id=min(eos_ids),
    )


def token_logprob(
    logprobs: Any, token_id: int, top: int, spell: Callable[[int], tuple[str, tuple[int, ...]]]
) -> TokenLogprob:
    """The chosen token's entry with the `top` most likely tokens at its position."""
    import torch

    def entry(token: int, value: float) -> TokenLogprob:
        text, raw = spell(token)
        return TokenLogprob(text, max(value, IMPOSSIBLE_LOGPROB), raw)

    best = torch.topk(logprobs, top) if top else None
    alternatives = (
        tuple(entry(int(i), float(v)) for v, i in zip(best.values, best.indices, strict=True))
        if best is not None
        else ()
    )
    chosen = entry(token_id, float(logprobs[token_id]))
    return TokenLogprob(chosen.token, chosen.logprob, chosen.bytes, alternatives)


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """GPT-2 byte-level BPE's map from a token's characters back to bytes."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def token_bytes(piece: str, decoded: str) -> tuple[int, ...]:
    """A token's exact bytes: from its byte-level BPE piece when it is one (a token may hold
    part of a UTF-8 character), else the UTF-8 of its decoded text."""
    table = _byte_of_char()
    if piece and all(char in table for char in piece):
        return tuple(table[char] for char in piece)
    return tuple(decoded.encode("utf-8"))
