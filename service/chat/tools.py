"""OpenAI's function-calling wire models: the tools a request offers, how the model may call
them, and the calls an assistant turn carries."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.messages import ToolCall

# OpenAI's rule for function names.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionSpec(BaseModel):
    """A function the model may call; parameters is a JSON Schema object."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    """One entry of `tools`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class FunctionName(BaseModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    """`tool_choice` naming the one function the model must call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    """A call's function: its name and its arguments as JSON text."""

    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_arguments(cls, value: str) -> str:
        try:
            json.loads(value)
        except ValueError:
            raise ValueError("arguments must be JSON text") from None
        return value


class ToolCallWire(BaseModel):
    """A tool call as an assistant message carries it, in a request or a response."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall

    def call(self) -> ToolCall:
        """The call as ladder's value type."""
        return ToolCall(self.id, self.function.name, self.function.arguments)

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallWire:
        """The wire form of a call the engine returned."""
        # Not validated: the model's arguments are returned as generated, even when not JSON.
        function = FunctionCall.model_construct(name=call.name, arguments=call.arguments)
        return cls.model_construct(id=call.id, type="function", function=function)
