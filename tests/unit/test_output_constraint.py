"""The output layer without a model: constraints compile or are refused naming the problem, in a
configuration (a start-up error) and in a request's response_format (a 400 with its param); the
plan carries the constraint to the engine; vLLM is asked for the same; the shipped triage schema
is task.yaml's value sets."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from fastapi.testclient import TestClient

from adapters.base_model import BaseModel, Fingerprint
from evaluation.journal import ExampleResult
from evaluation.pricing import PriceTable
from evaluation.report import ConfigurationSummary, markdown_table, summarise
from service.api.app import create_app
from service.engines.structured import vllm_fields
from service.engines.vllm_server import server_command
from service.errors import ConfigurationError
from service.messages import OutputConstraint
from service.routing import output
from service.routing.configs import load_configurations
from service.settings import DEFAULT_CONFIG, Settings
from tests.support.paths import REPO
from tests.support.scripted_engine import ScriptedEngine

TRIAGE = REPO / "corpus" / "tasks" / "support-triage"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
}
CONFIG = f"""
configurations:
  plain:
    system_prompt: Be brief.
  yes-no:
    system_prompt: Answer yes or no.
    output:
      choice: ["yes", "no"]
  schema:
    output:
      json_schema: {json.dumps(SCHEMA)}
"""
USER = {"role": "user", "content": "Is the kettle safe?"}


def test_every_kind_compiles_and_a_schema_keeps_its_key_order() -> None:
    for constraint in (
        output.json_schema(SCHEMA),
        output.json_object(),
        output.regex(r"BW-\d{6}"),
        output.choice(['say "yes"', "back\\slash", "été"]),
    ):
        assert output.check(constraint)
    ordered = output.json_schema({"properties": {"b": {}, "a": {}}, "type": "object"})
    assert ordered.schema == '{"properties":{"b":{},"a":{}},"type":"object"}'


@pytest.mark.parametrize(
    ("constraint", "problem"),
    [
        (output.json_schema({"type": "kettle"}), "Invalid type: kettle"),
        (output.json_schema({"$ref": "#/defs/missing"}), "/defs/missing"),
        (output.json_schema({"type": "string", "format": "shoe-size"}), "Unknown format"),
        (output.regex("BW-(\\d"), "unclosed group"),
        (output.choice(["yes", ""]), "non-empty"),
    ],
)
def test_a_constraint_the_library_cannot_compile_names_the_problem(
    constraint: OutputConstraint, problem: str
) -> None:
    with pytest.raises(output.OutputError, match=r"cannot|non-empty") as refused:
        output.check(constraint)
    assert problem in str(refused.value) and "\n" not in str(refused.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "configs.yaml"
    path.write_text(text)
    return path


def test_an_output_layer_is_read_from_a_file_and_listed_between_few_shot_and_rag(
    tmp_path: Path,
) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "answer.json").write_text(json.dumps(SCHEMA))
    path = write(
        tmp_path,
        "configurations:\n  a:\n    system_prompt: hi\n"
        "    few_shot: {examples: [{user: q, assistant: a}]}\n"
        "    retrieval: {collection: docs}\n"
        "    output: {json_schema_file: schemas/answer.json}\n",
    )
    configuration = load_configurations(path, [], ["docs"]).get("a")
    assert configuration is not None and configuration.output is not None
    assert configuration.layers() == ["system_prompt", "few_shot", "output", "rag"]
    assert configuration.output.constraint() == output.json_schema(SCHEMA)


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        ("{json_schema: {type: kettle}}", "field output: the JSON schema cannot be compiled"),
        ("{regex: '(a'}", "field output: the regex cannot be compiled"),
        ("{regex: a, choice: [b]}", "give exactly one of"),
        ("{choice: []}", "field output.choice"),
        ("{json_schema_file: missing.json}", "field output.json_schema_file"),
    ],
)
def test_a_bad_output_layer_is_a_start_up_error_naming_the_field(
    tmp_path: Path, layer: str, expected: str
) -> None:
    path = write(tmp_path, f"configurations:\n  a:\n    output: {layer}\n")
    with pytest.raises(ConfigurationError, match="configuration 'a'") as refused:
        load_configurations(path, [], [])
    assert expected in str(refused.value)


def test_the_shipped_triage_schema_is_task_yaml_value_sets_in_order() -> None:
    task = yaml.safe_load((TRIAGE / "task.yaml").read_text())["schema"]
    schema = json.loads((TRIAGE / "schema.json").read_text())
    assert list(schema["properties"]) == task["keys"] == schema["required"]
    assert schema["additionalProperties"] is False
    for key, allowed in task["values"].items():
        declared = schema["properties"][key]
        if key == "needs_human":
            assert declared == {"type": "boolean"} and set(allowed) == {True, False}
        else:
            assert declared == {"enum": allowed}
    shipped = load_configurations(DEFAULT_CONFIG, ["support-triage"], ["docs"])
    for name in ("triage-constrained", "triage-similar-constrained"):
        configuration = shipped.get(name)
        assert configuration is not None and configuration.output is not None
        assert configuration.output.constraint() == output.json_schema(schema)


@pytest.fixture()
def app(tmp_path: Path) -> Iterator[tuple[openai.OpenAI, ScriptedEngine]]:
    """The official client in front of the app and an engine that records what it is sent."""
    settings = Settings(data_dir=tmp_path, config=write(tmp_path, CONFIG), context_window=512)
    engine = ScriptedEngine()
    with TestClient(create_app(settings, engine=engine)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http), engine


def sent(app: tuple[openai.OpenAI, ScriptedEngine], model: str, **fields: Any) -> Any:
    """The output constraint the engine received for one request."""
    client, engine = app
    engine.enqueue("yes")
    client.chat.completions.create(model=model, messages=[USER], **fields)
    return engine.history[-1].output


def test_response_format_reaches_the_engine_and_overrides_the_configuration(
    app: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    assert sent(app, "plain") is None
    assert sent(app, "yes-no") == output.choice(["yes", "no"])
    assert sent(app, "schema") == output.json_schema(SCHEMA)
    assert sent(app, "yes-no", response_format=schema_format) == output.json_schema(SCHEMA)
    assert sent(app, "plain", response_format={"type": "json_object"}) == output.json_object()
    assert sent(app, "yes-no", response_format={"type": "text"}) is None


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "kettle"}}},
            "kettle",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"pattern": "("}}},
            "regex",
        ),
        ({"type": "json_schema"}, "json_schema is given with"),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "a b"}}, "json_schema.name"),
        ({"type": "yaml"}, "type"),
        ({"type": "text", "grammar": "x"}, "grammar"),
        ("json", "valid dictionary"),
    ],
)
def test_a_bad_response_format_is_a_400_naming_it(
    app: tuple[openai.OpenAI, ScriptedEngine], response_format: Any, message: str
) -> None:
    client, engine = app
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="plain", messages=[USER], response_format=response_format
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "response_format"
    assert message in body["message"] and not engine.history


def test_vllm_is_asked_for_the_same_constraint() -> None:
    assert vllm_fields(None) == {}
    assert vllm_fields(output.json_schema(SCHEMA)) == {"structured_outputs": {"json": SCHEMA}}
    assert vllm_fields(output.json_object()) == {"structured_outputs": {"json_object": True}}
    assert vllm_fields(output.regex("a+")) == {"structured_outputs": {"regex": "a+"}}
    assert vllm_fields(output.choice(["a", "b"])) == {"structured_outputs": {"choice": ["a", "b"]}}


def test_vllm_starts_with_llguidance_and_one_line_json() -> None:
    fingerprint = Fingerprint("LlamaForCausalLM", 576, 30, 49152, "0" * 64)
    base = BaseModel("SmolLM2", Path("/models/smollm2"), fingerprint, 2048)
    command = server_command(Settings(), base, {})
    flag = command.index("--structured-outputs-config")
    assert json.loads(command[flag + 1]) == {"backend": "xgrammar", "disable_any_whitespace": True}


def test_the_evaluation_reports_completion_tokens_per_second() -> None:
    replies = [(30, 2.0), (20, 1.0), (10, 2.0)]  # completion tokens, latency: 15, 20, 5 tok/s
    results = [
        ExampleResult(
            "c",
            str(index),
            {
                "prompt_tokens": 100,
                "completion_tokens": tokens,
                "few_shot_tokens": 0,
                "context_tokens": 0,
                "latency_s": latency,
            },
            {"format_validity": 1.0},
        )
        for index, (tokens, latency) in enumerate(replies)
    ]
    summary = summarise("c", results, PriceTable.load(), None)
    assert summary.completion_tokens_per_s == 15.0
    header, _, row = markdown_table([summary], ["format_validity"]).splitlines()
    assert "completion tok/s" in header and "| 15.0 |" in row
    saved_before = {k: v for k, v in summary.as_dict().items() if k != "completion_tokens_per_s"}
    assert math.isnan(ConfigurationSummary.from_dict(saved_before).completion_tokens_per_s)
