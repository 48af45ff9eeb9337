"""An engine's answers in OpenAI's response shape: one choice each, with logprobs and tool calls."""

from __future__ import annotations

from collections.abc import Sequence

from service.chat.protocol import (
    Choice,
    ChoiceLogprobs,
    ResponseMessage,
    TokenLogprobOut,
    TopLogprob,
)
from service.chat.tools import ToolCallWire
from service.engines.base import Answer, TokenLogprob


def logprobs_out(entries: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    """Token log-probabilities as OpenAI's `logprobs` object."""
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=entry.token,
                logprob=entry.logprob,
                bytes=list(entry.bytes),
                top_logprobs=[
                    TopLogprob(token=top.token, logprob=top.logprob, bytes=list(top.bytes))
                    for top in entry.top_logprobs
                ],
            )
            for entry in entries
        ]
    )


def choice_of(index: int, answer: Answer) -> Choice:
    """One answer as a choice; an answer that calls tools has content null unless it has text."""
    calls = [ToolCallWire.of(call) for call in answer.tool_calls] or None
    content = answer.text if answer.text or not calls else None
    return Choice(
        index=index,
        message=ResponseMessage(content=content, tool_calls=calls),
        finish_reason=answer.finish_reason,
        logprobs=logprobs_out(answer.logprobs) if answer.logprobs is not None else None,
    )


def choices_of(answers: Sequence[Answer]) -> list[Choice]:
    """Every answer of a completion, in order."""
    return [choice_of(index, answer) for index, answer in enumerate(answers)]
