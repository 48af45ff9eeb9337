"""OpenAI's optional chat parameters: honoured by the engine or refused with a 400, never ignored.

Which parameters a request uses, checked against what the engine declares (its Capabilities),
plus the rules between fields OpenAI enforces (top_logprobs needs logprobs, tool_choice needs
tools, a tool message answers a call made earlier).
"""

from __future__ import annotations

from service.chat.protocol import ChatCompletionRequest
from service.chat.tools import NamedToolChoice
from service.engines.base import Capabilities
from service.errors import InvalidRequest
from service.messages import OutputConstraint


def used_parameters(request: ChatCompletionRequest) -> list[str]:
    """The optional parameters the request sets to something other than their no-op default."""
    used = {
        "tools": bool(request.tools),
        "tool_choice": request.tool_choice is not None,
        "parallel_tool_calls": request.parallel_tool_calls is not None,
        "logprobs": bool(request.logprobs),
        "top_logprobs": bool(request.top_logprobs),
        "logit_bias": bool(request.logit_bias),
        "presence_penalty": bool(request.presence_penalty),
        "frequency_penalty": bool(request.frequency_penalty),
        "n": request.n > 1,
    }
    return [name for name, set_ in used.items() if set_]


def check_parameters(
    request: ChatCompletionRequest, capabilities: Capabilities, engine: str, max_n: int
) -> None:
    """Refuses, naming the parameter, what the engine cannot honour or OpenAI would refuse."""
    if request.n > max_n:
        raise InvalidRequest(f"n is {request.n}, over the limit of {max_n}", param="n")
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    _check_tool_choice(request)
    for name in used_parameters(request):
        if name not in capabilities.parameters:
            raise InvalidRequest(f"{name} is not supported by the {engine} engine", param=name)
        if request.stream and name not in capabilities.streamed:
            message = f"{name} is not supported by the {engine} engine when streaming"
            raise InvalidRequest(message, param=name)
    if (
        request.tools
        and request.tool_choice in (None, "auto")
        and not capabilities.auto_tool_choice
    ):
        raise InvalidRequest(
            f"tool_choice auto (the default with tools) is not supported by the {engine} engine"
            " unless LADDER_VLLM_AUTO_TOOL_CHOICE is on; name a function or use required",
            param="tool_choice",
        )
    _check_tool_history(request, capabilities, engine)


def _check_tool_choice(request: ChatCompletionRequest) -> None:
    choice = request.tool_choice
    for name, value in (
        ("tool_choice", choice),
        ("parallel_tool_calls", request.parallel_tool_calls),
    ):
        if value is not None and not request.tools:
            raise InvalidRequest(f"{name} is only allowed when tools are given", param=name)
    if isinstance(choice, NamedToolChoice):
        offered = {tool.function.name for tool in request.tools or []}
        if choice.function.name not in offered:
            raise InvalidRequest(
                f"tool_choice names {choice.function.name!r}, which is not among the tools",
                param="tool_choice",
            )


def _check_tool_history(
    request: ChatCompletionRequest, capabilities: Capabilities, engine: str
) -> None:
    """Tool calls and tool messages in the conversation: only on an engine with tools, and a
    tool message must answer a call an earlier assistant message made."""
    called: set[str] = set()
    for index, message in enumerate(request.messages):
        if not (message.tool_calls or message.role == "tool"):
            continue
        if "tools" not in capabilities.parameters:
            raise InvalidRequest(
                f"tool calls and tool messages are not supported by the {engine} engine",
                param=f"messages.{index}",
            )
        called.update(call.id for call in message.tool_calls or [])
        if message.role == "tool" and message.tool_call_id not in called:
            raise InvalidRequest(
                f"tool message answers {message.tool_call_id!r}, which no earlier assistant"
                " message called",
                param=f"messages.{index}.tool_call_id",
            )


def check_forced_tool_call(request: ChatCompletionRequest, output: OutputConstraint | None) -> None:
    """A named or required tool_choice makes the answer a call (vLLM constrains it to the
    functions' schemas), so it cannot also follow an output constraint."""
    choice = request.tool_choice
    if output is None or not (choice == "required" or isinstance(choice, NamedToolChoice)):
        return
    source = (
        "response_format" if request.response_format is not None else "the configuration's output"
    )
    raise InvalidRequest(
        f"a named or required tool_choice cannot be combined with {source}: both constrain the"
        " answer's form",
        param="response_format" if request.response_format is not None else "tool_choice",
    )
