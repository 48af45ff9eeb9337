"""Configurations: named stacks of layers, loaded from YAML and validated before they serve."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import ConfigurationError
from service.messages import OutputConstraint
from service.routing import output


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FewShotExample(_Strict):
    """One demonstration: a user turn and the assistant's ideal answer."""

    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class FewShot(_Strict):
    """Few-shot turns, inline or from a JSONL file (`{"user", "assistant"}` or chat format)."""

    examples: tuple[FewShotExample, ...] = ()
    file: Path | None = None
    count: int | None = Field(None, ge=1, le=64, description="How many examples to use.")
    select: Literal["fixed", "similar"] = Field(
        "fixed",
        description="fixed: the first `count` examples; similar: the `count` nearest to the"
        " request's last user message, the nearest placed last.",
    )

    @model_validator(mode="after")
    def _examples_or_file(self) -> FewShot:
        if not self.examples and self.file is None:
            raise ValueError("give examples or a file")
        if self.select == "similar" and self.count is None:
            raise ValueError("select: similar needs a count")
        return self

    def selected(self) -> tuple[FewShotExample, ...]:
        """The fixed selection: the first `count` examples."""
        return self.examples[: self.count] if self.count else self.examples


class Retrieval(_Strict):
    """The knowledge layer: which collection, how many passages, how much context."""

    collection: str
    k: int = Field(4, ge=1, le=50)
    mode: Literal["vector", "hybrid"] = "vector"
    min_score: float = Field(-1.0, ge=-1.0, le=1.0, description="Minimum cosine similarity.")
    max_context_tokens: int = Field(800, ge=16, description="Token budget of the context block.")
    on_error: Literal["fail", "answer_without_context"] = "fail"
    citations: Literal["none", "inline"] = Field(
        "none",
        description="inline: the prompt asks for [n] markers, and the response says which"
        " passages the answer cites.",
    )


class Output(_Strict):
    """The output layer: the answer must match a JSON schema (inline or from a file), a regex,
    or be one of fixed strings; the engine enforces it while decoding."""

    json_schema: dict[str, Any] | None = None
    json_schema_file: Path | None = Field(
        None, description="Read the JSON schema from a file, relative to this file."
    )
    regex: str | None = Field(None, min_length=1)
    choice: tuple[str, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Output:
        given = [name for name, value in self if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of json_schema, json_schema_file, regex, choice")
        return self

    def constraint(self) -> OutputConstraint:
        """The constraint an engine enforces (a schema file must have been read already)."""
        if self.regex is not None:
            return output.regex(self.regex)
        if self.choice is not None:
            return output.choice(self.choice)
        if self.json_schema is None:
            raise ValueError("the JSON schema file has not been read")
        return output.json_schema(self.json_schema)


class Generation(_Strict):
    """Sampling defaults; a request's own values win."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()


class Configuration(_Strict):
    """A named stack of behaviour layers (prompt, few-shot, adapter) and knowledge (retrieval)."""

    name: str
    description: str = ""
    system_prompt: str | None = None
    system_prompt_file: Path | None = Field(None, description="Read the system prompt from a file.")
    few_shot: FewShot | None = None
    output: Output | None = None
    adapter: str | None = None
    retrieval: Retrieval | None = None
    generation: Generation = Generation()
    skip_if_adapter_missing: bool = Field(
        False,
        description="Leave the configuration out, instead of failing, until its adapter exists.",
    )

    def layers(self) -> list[str]:
        """The layers this configuration switches on, cheapest rung first."""
        named = [
            ("system_prompt", self.system_prompt),
            ("few_shot", self.few_shot),
            ("output", self.output),
            ("rag", self.retrieval),
            ("adapter", self.adapter),
        ]
        return [layer for layer, value in named if value]


class _ConfigFile(_Strict):
    configurations: dict[str, dict[str, object]] = Field(min_length=1)


@dataclass(frozen=True)
class ConfigSet:
    """The configurations being served, with where they came from."""

    configurations: Mapping[str, Configuration]
    source: Path
    digest: str
    skipped: Mapping[str, str]

    def get(self, name: str) -> Configuration | None:
        """The configuration of that name, if any."""
        return self.configurations.get(name)


def _describe(name: str, error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(configuration)"
    return f"configuration {name!r}: field {field}: {first['msg']}"


def _load_examples(file: Path) -> tuple[FewShotExample, ...]:
    examples = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "messages" in row:
                turns = {m["role"]: m["content"] for m in row["messages"]}
                row = {"user": turns["user"], "assistant": turns["assistant"]}
            examples.append(FewShotExample.model_validate(row))
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            raise ValueError(f"{file.name} line {number}: {error}") from error
    if not examples:
        raise ValueError(f"{file.name} holds no examples")
    return tuple(examples)


def _with_prompt_file(name: str, configuration: Configuration, base: Path) -> Configuration:
    file = configuration.system_prompt_file
    if file is None:
        return configuration
    if configuration.system_prompt is not None:
        raise ConfigurationError(
            f"configuration {name!r}: field system_prompt_file: give a prompt or a file, not both"
        )
    path = file if file.is_absolute() else base / file
    if not path.is_file():
        raise ConfigurationError(
            f"configuration {name!r}: field system_prompt_file: no such file {path}"
        )
    prompt = path.read_text(encoding="utf-8").strip()
    return configuration.model_copy(update={"system_prompt": prompt, "system_prompt_file": path})


def _with_output(name: str, configuration: Configuration, base: Path) -> Configuration:
    """Reads the output layer's schema file and checks that the grammar library compiles it."""
    layer = configuration.output
    if layer is None:
        return configuration
    file = layer.json_schema_file
    if file is not None:
        path = file if file.is_absolute() else base / file
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigurationError(
                f"configuration {name!r}: field output.json_schema_file: {path}: {error}"
            ) from error
        if not isinstance(schema, dict):
            raise ConfigurationError(
                f"configuration {name!r}: field output.json_schema_file: {path} is not an object"
            )
        layer = layer.model_copy(update={"json_schema": schema, "json_schema_file": path})
    try:
        output.check(layer.constraint())
    except output.OutputError as error:
        raise ConfigurationError(f"configuration {name!r}: field output: {error}") from error
    return configuration.model_copy(update={"output": layer})


def _resolve(name: str, raw: Mapping[str, object], base: Path) -> Configuration:
    try:
        configuration = Configuration.model_validate({**raw, "name": name})
    except ValidationError as error:
        raise ConfigurationError(_describe(name, error)) from error
    configuration = _with_output(name, _with_prompt_file(name, configuration, base), base)
    few_shot = configuration.few_shot
    if few_shot is not None and few_shot.file is not None:
        file = few_shot.file if few_shot.file.is_absolute() else base / few_shot.file
        if not file.is_file():
            raise ConfigurationError(
                f"configuration {name!r}: field few_shot.file: no such file {file}"
            )
        try:
            examples = few_shot.examples + _load_examples(file)
        except ValueError as error:
            raise ConfigurationError(
                f"configuration {name!r}: field few_shot.file: {error}"
            ) from error
        update = {"few_shot": few_shot.model_copy(update={"examples": examples, "file": file})}
        configuration = configuration.model_copy(update=update)
    return configuration


def resolve_configuration(name: str, raw: Mapping[str, object], base: Path) -> Configuration:
    """One configuration from its definition (as a configurations file holds it), its files read
    relative to `base`; ConfigurationError names the field when it is invalid."""
    return _resolve(name, raw, base)


def load_configurations(
    path: Path,
    adapters: Collection[str],
    collections: Collection[str] | None,
    only: Collection[str] | None = None,
) -> ConfigSet:
    """Reads and validates a configurations file against the known adapters and collections.

    `collections` is None when the index cannot be reached; collections are then not checked.
    `only` names the configurations to serve (an evaluation needs no others): the rest are still
    parsed, so a typo anywhere fails, but are not checked against adapters and collections.
    """
    try:
        text = path.read_text(encoding="utf-8")
        document = _ConfigFile.model_validate(yaml.safe_load(text))
    except OSError as error:
        raise ConfigurationError(f"cannot read configurations file {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path} is not valid YAML: {error}") from error
    except ValidationError as error:
        raise ConfigurationError(f"{path}: {_describe('(file)', error)}") from error
    served: dict[str, Configuration] = {}
    skipped: dict[str, str] = {}
    for name, raw in document.configurations.items():
        configuration = _resolve(name, raw, path.parent)
        if only is not None and name not in only:
            continue
        if (
            configuration.adapter is not None
            and configuration.adapter.split("@")[0] not in adapters
        ):
            reason = f"unknown adapter {configuration.adapter!r} (registered: {sorted(adapters)})"
            if configuration.skip_if_adapter_missing:
                skipped[name] = reason
                continue
            raise ConfigurationError(f"configuration {name!r}: field adapter: {reason}")
        retrieval = configuration.retrieval
        if (
            retrieval is not None
            and collections is not None
            and retrieval.collection not in collections
        ):
            raise ConfigurationError(
                f"configuration {name!r}: field retrieval.collection: unknown collection"
                f" {retrieval.collection!r} (known: {sorted(collections)})"
            )
        served[name] = configuration
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return ConfigSet(served, path, digest, skipped)
