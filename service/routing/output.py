"""The output layer's grammar: an OutputConstraint as an llguidance grammar, checked once.

A configuration's `output:` and a request's `response_format` both become an OutputConstraint;
this module turns one into the grammar text the local engine compiles for its tokenizer, and
tells what is wrong with one the library cannot compile, before any request reaches an engine.
JSON is produced on one line with `", "` and `": "` between items (as `json.dumps` writes it) and
object keys in the order the schema declares them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service.messages import OutputConstraint

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# One line, spaced like json.dumps(value): no newlines, so a reply stays one line.
JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
ANY_OBJECT = {"type": "object"}


class OutputError(ValueError):
    """A constraint the grammar library cannot compile; the message names the problem."""


def schema_text(schema: Mapping[str, Any]) -> str:
    """A JSON schema as canonical text: compact, key order kept (it is the output's key order)."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def json_schema(schema: Mapping[str, Any]) -> OutputConstraint:
    """Output that matches a JSON schema."""
    return OutputConstraint("json_schema", schema=schema_text(schema))


def json_object() -> OutputConstraint:
    """Output that is any JSON object."""
    return OutputConstraint("json_object")


def regex(pattern: str) -> OutputConstraint:
    """Output that matches a regular expression as a whole."""
    return OutputConstraint("regex", pattern=pattern)


def choice(choices: Sequence[str]) -> OutputConstraint:
    """Output that is exactly one of fixed strings."""
    return OutputConstraint("choice", choices=tuple(choices))


def grammar(constraint: OutputConstraint) -> str:
    """The llguidance grammar of a constraint; raises OutputError when it cannot be built."""
    from llguidance import LLMatcher

    try:
        if constraint.kind == "json_schema":
            return str(LLMatcher.grammar_from_json_schema(constraint.schema or "{}", JSON_LAYOUT))
        if constraint.kind == "json_object":
            return str(LLMatcher.grammar_from_json_schema(schema_text(ANY_OBJECT), JSON_LAYOUT))
        if constraint.kind == "regex":
            return str(LLMatcher.grammar_from_regex(constraint.pattern or ""))
    except ValueError as error:
        raise OutputError(f"the JSON schema cannot be used: {error}") from error
    if not constraint.choices or not all(constraint.choices):
        raise OutputError("a choice needs at least one non-empty string")
    # Lark literals take JSON string escapes, so any text is one literal.
    literals = " | ".join(json.dumps(text, ensure_ascii=False) for text in constraint.choices)
    return str(LLMatcher.grammar_from_lark(f"start: {literals}"))


@functools.lru_cache(maxsize=256)
def check(constraint: OutputConstraint) -> str:
    """The constraint's grammar, compiled once without a tokenizer to find its errors; raises
    OutputError naming the problem (an unknown type, a bad regex, a dangling $ref...). Kept per
    constraint: a request's response_format and the engine's compile ask for the same one."""
    from llguidance import LLMatcher

    text = grammar(constraint)
    problem = " ".join(LLMatcher.validate_grammar(text, None).split())
    if problem:
        what = {"json_schema": "JSON schema", "json_object": "JSON object", "regex": "regex"}
        kind = what.get(constraint.kind, "choice")
        raise OutputError(f"the {kind} cannot be compiled: {problem}")
    return text
