"""A task loads from its task.yaml with the pieces its rungs are built from; `fields:` maps a data
file's own key names; every broken task is one line (and `ladder eval` exits 2 with that line, no
traceback); the general task is needed only when an adapter rung runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from adapters.registry import AdapterRegistry
from evaluation.backends import Reply
from evaluation.runner import score
from evaluation.tasks import TaskError, TaskNotFound, load_task
from service.cli.main import app
from tests.support.paths import REPO, TRIAGE_DIR

TASKS = REPO / "corpus" / "tasks"
QA_ROWS: list[dict[str, Any]] = [
    {"id": "a1", "question": "What colour is a clear sky?", "answer": "blue", "source": "sky.md"},
    {"id": "a2", "question": "What is two plus two?", "answer": ["four", "4"], "source": "sum.md"},
]
GOLD = {"category": "billing", "priority": "low", "product": "none", "needs_human": False}


def write_task(root: Path, spec: str, files: dict[str, str], name: str = "bad") -> Path:
    """A task folder `root/name` holding task.yaml and the given files."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "task.yaml").write_text(spec)
    for file_name, text in files.items():
        (folder / file_name).write_text(text)
    return folder


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def renamed(rows: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    return [{names.get(key, key): value for key, value in row.items()} for row in rows]


def reply(text: str, sources: tuple[str, ...] = ()) -> Reply:
    return Reply(text, 10, 5, 0, 0, 0.1, sources=sources)


def test_renamed_question_fields_load_and_score_as_the_default_names(tmp_path: Path) -> None:
    spec = "kind: knowledge\ndata: data.jsonl\nk: 2\n"
    write_task(tmp_path, spec, {"data.jsonl": jsonl(QA_ROWS)}, name="plain")
    names = {"question": "q", "answer": "a", "source": "src"}
    mapped = spec + "fields: {question: q, answer: a, source: src}\n"
    write_task(tmp_path, mapped, {"data.jsonl": jsonl(renamed(QA_ROWS, names))}, name="mapped")
    plain, other = load_task(tmp_path, "plain"), load_task(tmp_path, "mapped")
    assert other.examples == plain.examples
    assert plain.examples[1].gold == ["four", "4"] and plain.examples[0].source == "sky.md"
    replies = [reply("A clear sky is blue.", ("sky.md",)), reply("Five.", ("x.md", "sum.md"))]
    scores = [score(other, e, r) for e, r in zip(other.examples, replies, strict=True)]
    assert scores == [score(plain, e, r) for e, r in zip(plain.examples, replies, strict=True)]
    assert [s["contains_answer"] for s in scores] == [1.0, 0.0]
    assert [s["mrr"] for s in scores] == [1.0, 0.5]


def test_renamed_conversation_field_loads_and_scores_as_messages(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (TRIAGE_DIR / "heldout.jsonl").read_text().splitlines()]
    spec = "kind: behaviour\nheldout: held.jsonl\nschema: {category: [billing]}\n"
    write_task(tmp_path, spec, {"held.jsonl": jsonl(rows[:3])}, name="plain")
    mapped = spec + "fields: {messages: conversation}\n"
    other_rows = renamed(rows[:3], {"messages": "conversation"})
    write_task(tmp_path, mapped, {"held.jsonl": jsonl(other_rows)}, name="mapped")
    plain, other = load_task(tmp_path, "plain"), load_task(tmp_path, "mapped")
    assert other.examples == plain.examples and len(plain.examples) == 3
    gold_line = rows[0]["messages"][-1]["content"]
    assert score(other, other.examples[0], reply(gold_line)) == score(
        plain, plain.examples[0], reply(gold_line)
    )
    assert score(plain, plain.examples[0], reply(gold_line))["field_accuracy"] == 1.0


def behaviour_row(last: str, role: str = "assistant") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}, {"role": role, "content": last}]}


KNOWLEDGE = "kind: knowledge\ndata: data.jsonl\n"
BEHAVIOUR = "kind: behaviour\nheldout: held.jsonl\n"
GOOD_QA = {"data.jsonl": jsonl(QA_ROWS)}
# (case, task.yaml, files, what the one-line message says)
BROKEN: list[tuple[str, str, dict[str, str], str]] = [
    ("yaml", "kind: knowledge\ndata: [unclosed\n", {}, "task.yaml is not valid YAML: line 3"),
    ("not a mapping", "- kind\n- data\n", {}, "task.yaml: expected a mapping"),
    ("kind", "kind: opinion\ndata: data.jsonl\n", GOOD_QA, "unknown kind 'opinion'"),
    ("no data named", "kind: knowledge\n", {}, "names no held-out data"),
    ("data file", "kind: knowledge\ndata: nowhere.jsonl\n", {}, "data: no such file"),
    ("empty data", KNOWLEDGE, {"data.jsonl": "\n\n"}, "data.jsonl: no examples"),
    (
        "json line",
        KNOWLEDGE,
        {"data.jsonl": jsonl(QA_ROWS[:1]) + '{"question": "a", "answ\n'},
        "data.jsonl line 2: not valid JSON",
    ),
    ("row", KNOWLEDGE, {"data.jsonl": "[1, 2]\n"}, "line 1: expected a JSON object, got a list"),
    (
        "mapped field",
        KNOWLEDGE + "fields: {question: q}\n",
        {"data.jsonl": jsonl([*renamed(QA_ROWS, {"question": "q"}), QA_ROWS[0]])},
        "data.jsonl line 3: no field 'question' (fields maps question to 'q')",
    ),
    (
        "default field",
        KNOWLEDGE,
        {"data.jsonl": jsonl([{"question": "x?", "reply": "y"}])},
        "data.jsonl line 1: no field 'answer'",
    ),
    ("fields key", KNOWLEDGE + "fields: {query: q}\n", GOOD_QA, "task field 'query'"),
    (
        "answer type",
        KNOWLEDGE,
        {"data.jsonl": jsonl([{"question": "x?", "answer": 42}])},
        "line 1: answer must be text or a non-empty list of texts, got a number",
    ),
    (
        "answer list",
        KNOWLEDGE,
        {"data.jsonl": jsonl([{"question": "x?", "answer": ["y", 1]}])},
        "line 1: answer must be text or a non-empty list of texts, got a list",
    ),
    (
        "question type",
        KNOWLEDGE,
        {"data.jsonl": jsonl([{"question": None, "answer": "y"}])},
        "question must be non-empty text, got null",
    ),
    (
        "duplicate id",
        KNOWLEDGE,
        {"data.jsonl": jsonl([QA_ROWS[0], QA_ROWS[0]])},
        "line 2: id 'a1' occurs twice",
    ),
    (
        "gold",
        BEHAVIOUR,
        {"held.jsonl": jsonl([behaviour_row(json.dumps(GOLD)), behaviour_row("billing, low")])},
        "held.jsonl line 2: the gold answer is not JSON",
    ),
    (
        "gold role",
        BEHAVIOUR,
        {"held.jsonl": jsonl([behaviour_row(json.dumps(GOLD), role="user")])},
        "the last message is 'user', not assistant",
    ),
    (
        "messages",
        BEHAVIOUR,
        {"held.jsonl": jsonl([{"messages": "hi"}])},
        "line 1: messages must be a list of {role, content}",
    ),
    (
        "output schema",
        KNOWLEDGE + "output_schema: schema.json\n",
        GOOD_QA,
        "output_schema: no such file",
    ),
    (
        "output schema json",
        KNOWLEDGE + "output_schema: schema.json\n",
        {**GOOD_QA, "schema.json": "{not json"},
        "output_schema",
    ),
    ("few-shot", KNOWLEDGE + "few_shot: pool.jsonl\n", GOOD_QA, "few_shot: no such file"),
    ("prompt file", KNOWLEDGE + "system_prompt: prompt.txt\n", GOOD_QA, "system_prompt: no such"),
    ("rung", KNOWLEDGE + "configurations: {lora: x}\n", GOOD_QA, "unknown rung 'lora'"),
    (
        "max tokens",
        KNOWLEDGE + "generation: {max_new_tokens: many}\n",
        GOOD_QA,
        "generation.max_new_tokens must be a whole number",
    ),
    ("stop", KNOWLEDGE + "generation: {stop: 5}\n", GOOD_QA, "generation.stop must be a string"),
    ("schema", KNOWLEDGE + "schema: {values: {a: [1]}, keys: [a, b]}\n", GOOD_QA, "key 'b'"),
]


@pytest.mark.parametrize(
    ("spec", "files", "says"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_a_broken_task_is_one_line_naming_the_problem(
    tmp_path: Path, spec: str, files: dict[str, str], says: str
) -> None:
    write_task(tmp_path, spec, files)
    with pytest.raises(TaskError) as raised:
        load_task(tmp_path, "bad")
    message = str(raised.value)
    assert says in message and "\n" not in message
    assert str(tmp_path / "bad") in message


def test_a_missing_task_names_the_known_ones(tmp_path: Path) -> None:
    write_task(tmp_path, KNOWLEDGE, GOOD_QA, name="good")
    with pytest.raises(TaskNotFound, match=r"^no task 'bad' in .* \(known: good\)$"):
        load_task(tmp_path, "bad")
    with pytest.raises(TaskNotFound, match=r"\(known: none\)$"):
        load_task(tmp_path / "nowhere", "bad")


@pytest.mark.parametrize(
    ("spec", "files", "says"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN]
)
def test_ladder_eval_prints_a_broken_task_as_one_line(
    tmp_path: Path, spec: str, files: dict[str, str], says: str
) -> None:
    write_task(tmp_path / "tasks", spec, files)
    arguments = ["eval", "--task", "bad", "--configs", "base", "--tasks-dir", f"{tmp_path}/tasks"]
    result = CliRunner().invoke(app, arguments, env={"LADDER_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception the command let through
    assert result.stderr.startswith("error: ") and says in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def ladder_eval(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ladder eval` in a process of its own, on tasks under tmp_path/tasks."""
    environment = {**os.environ, "LADDER_DATA_DIR": str(tmp_path / "data"), **env}
    command = [sys.executable, "-m", "service.cli", "eval", "--tasks-dir", f"{tmp_path}/tasks"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=environment, timeout=120, cwd=REPO
    )


@pytest.mark.parametrize("case", ["yaml", "mapped field", "answer type", "gold"])
def test_the_command_exits_2_with_one_line_and_no_traceback(tmp_path: Path, case: str) -> None:
    _, spec, files, says = next(broken for broken in BROKEN if broken[0] == case)
    write_task(tmp_path / "tasks", spec, files)
    result = ladder_eval(tmp_path, "--task", "bad", "--configs", "base")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and says in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_shipped_tasks_declare_their_pieces() -> None:
    triage = load_task(TASKS, "support-triage")
    assert triage.system_prompt == (TRIAGE_DIR / "system_prompt.txt").read_text().strip()
    assert triage.system_prompt_minimal == "Triage the customer message."
    assert (triage.train, triage.heldout_file, triage.few_shot, triage.output_schema) == (
        TRIAGE_DIR / "train.jsonl",
        TRIAGE_DIR / "heldout.jsonl",
        TRIAGE_DIR / "few_shot.jsonl",
        TRIAGE_DIR / "schema.json",
    )
    assert (triage.max_tokens, triage.stop, triage.collection) == (48, ("\n",), None)
    assert list(triage.schema) == ["category", "priority", "product", "needs_human"]
    shipped = yaml.safe_load((REPO / "service" / "configurations.yaml").read_text())
    configurations = shipped["configurations"]
    assert triage.configurations == {
        "prompt": "triage-prompt",
        "few-shot": "triage-few-shot",
        "few-shot-similar": "triage-few-shot-similar",
        "constrained": "triage-constrained",
        "similar-constrained": "triage-similar-constrained",
    }
    assert configurations["triage-prompt"]["generation"]["max_tokens"] == triage.max_tokens
    assert tuple(configurations["triage-prompt"]["generation"]["stop"]) == triage.stop

    knowledge = load_task(TASKS, "knowledge-qa")
    assert knowledge.system_prompt == configurations["prompt"]["system_prompt"]
    assert knowledge.few_shot == REPO / "corpus" / "few_shot" / "support.jsonl"
    assert knowledge.heldout_file == REPO / "corpus" / "qa.jsonl" and len(knowledge.examples) == 106
    assert (knowledge.collection, knowledge.train, knowledge.output_schema) == ("docs", None, None)
    assert knowledge.configurations == {
        "base": "base",
        "prompt": "prompt",
        "few-shot": "few-shot",
        "rag": "rag",
    }
    assert set(triage.configurations.values()) | set(knowledge.configurations.values()) <= set(
        configurations
    )

    general = load_task(TASKS, "general")
    assert general.system_prompt == "You are a helpful assistant. Answer briefly."
    assert (general.max_tokens, general.configurations, len(general.examples)) == (24, {}, 89)


def test_a_prompt_is_a_file_in_the_folder_or_the_text_itself(tmp_path: Path) -> None:
    spec = KNOWLEDGE + "system_prompt: prompt.txt\nsystem_prompt_minimal: Be brief.\n"
    write_task(tmp_path, spec, {**GOOD_QA, "prompt.txt": "Answer well.\n"}, name="files")
    task = load_task(tmp_path, "files")
    assert (task.system_prompt, task.system_prompt_minimal) == ("Answer well.", "Be brief.")
    long_text = KNOWLEDGE + f"generation: {{system_prompt: {'Say it. ' * 60}}}\n"
    write_task(tmp_path, long_text, GOOD_QA, name="text")
    assert load_task(tmp_path, "text").system_prompt == ("Say it. " * 60).strip()


def triage_only(tmp_path: Path) -> None:
    """A tasks folder that holds support-triage and no general task."""
    shutil.copytree(TRIAGE_DIR, tmp_path / "tasks" / "support-triage")


def test_a_run_without_adapter_rungs_needs_no_general_task(tmp_path: Path) -> None:
    triage_only(tmp_path)
    no_model = str(tmp_path / "no-model")  # fails fast, once the tasks are loaded
    result = ladder_eval(
        tmp_path,
        *("--task", "support-triage", "--configs", "triage-prompt", "--limit", "1"),
        LADDER_BASE_MODEL=no_model,
    )
    assert result.returncode == 2
    assert result.stderr == f"error: LADDER_BASE_MODEL={no_model}: not a model folder," + (
        " a .gguf file or a hub id (owner/name)\n"
    )


def test_a_run_with_an_adapter_rung_names_the_missing_general_task(tmp_path: Path) -> None:
    triage_only(tmp_path)
    adapter = tmp_path / "tuned"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"not used")
    AdapterRegistry(tmp_path / "data" / "adapters").register("tuned", adapter, {})
    config = tmp_path / "configs.yaml"
    config.write_text("configurations:\n  plain: {}\n  tuned-rung:\n    adapter: tuned\n")
    result = ladder_eval(
        tmp_path,
        *("--task", "support-triage", "--configs", "plain,tuned-rung", "--limit", "1"),
        LADDER_CONFIG=str(config),
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no task 'general' in {tmp_path}/tasks")
    assert "adapter rungs (tuned-rung) needs it" in result.stderr
    assert result.stderr.count("\n") == 1
