"""OpenAI's `response_format`: its wire models, and the output constraint a request ends up with
(the request's own when it sends one, else its configuration's `output:` layer)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import InvalidRequest, first_problem
from service.messages import OutputConstraint
from service.routing import output

# OpenAI's rule for a response format's name.
FORMAT_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`: a named JSON schema the answer must match."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=FORMAT_NAME)
    description: str | None = None
    schema_: dict[str, Any] = Field(
        default_factory=dict, alias="schema", description="The JSON schema; empty: any JSON."
    )
    strict: bool | None = Field(
        None, description="Accepted; the schema is always enforced while decoding."
    )


class ResponseFormat(BaseModel):
    """`{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", ...}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given with, and only with, type json_schema")
        return self

    def constraint(self) -> OutputConstraint | None:
        """The constraint this format asks for; text asks for none."""
        if self.json_schema is not None:
            return output.json_schema(self.json_schema.schema_)
        return output.json_object() if self.type == "json_object" else None


def parse_response_format(value: Any) -> ResponseFormat | None:
    """A request's response_format, with a one-line message naming the bad part (pydantic's
    own would report each union member and field separately)."""
    if value is None or isinstance(value, ResponseFormat):
        return value
    try:
        return ResponseFormat.model_validate(value)
    except ValidationError as error:
        raise ValueError(first_problem(error)) from None


def requested_output(
    response_format: ResponseFormat | None, configured: OutputConstraint | None
) -> OutputConstraint | None:
    """The constraint to decode with: the request's response_format overrides the
    configuration's; one the grammar library cannot compile is a 400 naming the problem."""
    if response_format is None:
        return configured
    constraint = response_format.constraint()
    if constraint is not None:
        try:
            output.check(constraint)
        except output.OutputError as error:
            raise InvalidRequest(str(error), param="response_format") from error
    return constraint
