"""Evaluation tasks: `corpus/tasks/<name>/task.yaml` says the kind, the data, the metrics and the
pieces each rung is built from. A TaskError is one line naming the file (and a data row's line)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from adapters.data import normalise_prompt

TaskKind = Literal["behaviour", "knowledge", "general"]

RUNGS: tuple[str, ...] = (
    *("base", "prompt", "few-shot", "few-shot-similar"),
    *("constrained", "similar-constrained", "rag"),
)
"""The rung ids a task's `configurations:` may map onto configuration names."""

ROW_FIELDS: Mapping[str, tuple[str, ...]] = {
    "behaviour": ("messages", "id"),
    "knowledge": ("question", "answer", "source", "id"),
    "general": ("question", "answer", "source", "id"),
}
"""The names a task reads its rows by; `fields:` maps them onto the data file's keys."""

_PROMPT_SUFFIXES = frozenset({".txt", ".md"})


class TaskError(ValueError):
    """A task that cannot be loaded or run; the message is one line."""


class TaskNotFound(TaskError):
    """The named task has no `task.yaml` under the tasks folder."""


@dataclass(frozen=True)
class EvalExample:
    """One held-out example: the conversation to send and what a right answer holds."""

    id: str
    messages: tuple[dict[str, str], ...]
    gold: Any
    source: str | None = None

    @property
    def prompt_key(self) -> str:
        """The normalised user text, to find the example in training data."""
        return normalise_prompt(self.messages)


@dataclass(frozen=True)
class Task:
    """A task's definition, held-out examples and the pieces its rungs are built from; paths are
    joined to the task folder and normalised, and every declared file exists."""

    name: str
    kind: TaskKind
    folder: Path
    examples: tuple[EvalExample, ...]
    primary_metric: str
    schema: dict[str, list[Any]] = field(default_factory=dict)
    k: int = 5
    system_prompt: str | None = None
    max_tokens: int | None = None
    train: Path | None = None
    heldout_file: Path | None = None
    few_shot: Path | None = None
    system_prompt_minimal: str | None = None
    output_schema: Path | None = None
    collection: str | None = None
    stop: tuple[str, ...] = ()
    configurations: dict[str, str] = field(default_factory=dict)


def load_task(root: Path, name: str) -> Task:
    """Reads `root/<name>/task.yaml`, its held-out data and its declared pieces; a TaskError
    (TaskNotFound when there is no such task) if any of them is missing or malformed."""
    try:
        return _load(_Spec.read(root, name))
    except TaskError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as error:
        raise TaskError(f"task {name!r}: {type(error).__name__}: {_one_line(error)}") from error


def _load(spec: _Spec) -> Task:
    kind = spec.raw.get("kind")
    if kind not in get_args(TaskKind):
        raise spec.error(f"unknown kind {kind!r} (known: {', '.join(get_args(TaskKind))})")
    fields = _fields(spec, str(kind))
    heldout = spec.file("heldout" if "heldout" in spec.raw else "data")
    if heldout is None:
        raise spec.error("names no held-out data (give `heldout:` or `data:`)")
    parse = _behaviour_example if kind == "behaviour" else _question_example
    generation = spec.raw.get("generation") or {}
    if not isinstance(generation, dict):
        raise spec.error("generation must be a mapping (max_new_tokens, stop, ...)")
    collection = spec.raw.get("collection")
    if collection is not None and not _filled(collection):
        raise spec.error(f"collection must be a collection name, got {collection!r}")
    return Task(
        name=spec.name,
        kind=cast(TaskKind, kind),
        folder=spec.folder,
        examples=_examples(heldout, fields, parse),
        primary_metric=str(spec.raw.get("primary_metric", "contains_answer")),
        schema=_schema(spec),
        k=_count(spec, spec.raw.get("k"), "k") or 5,
        system_prompt=_system_prompt(spec, generation),
        max_tokens=_count(spec, generation.get("max_new_tokens"), "generation.max_new_tokens"),
        train=spec.file("train"),
        heldout_file=heldout,
        few_shot=spec.file("few_shot"),
        system_prompt_minimal=spec.text(
            spec.raw.get("system_prompt_minimal"), "system_prompt_minimal"
        ),
        output_schema=_output_schema(spec),
        collection=collection,
        stop=_stop(spec, generation.get("stop")),
        configurations=_configurations(spec),
    )


@dataclass(frozen=True)
class _Spec:
    """A parsed task.yaml and where it lives, for reading its keys with one-line errors."""

    name: str
    folder: Path
    raw: Mapping[str, Any]

    @classmethod
    def read(cls, root: Path, name: str) -> _Spec:
        where = root / name / "task.yaml"
        if not where.is_file():
            dirs = sorted(root.iterdir()) if root.is_dir() else []
            known = ", ".join(p.name for p in dirs if (p / "task.yaml").is_file()) or "none"
            raise TaskNotFound(f"no task {name!r} in {root} (known: {known})")
        try:
            raw = yaml.safe_load(where.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
            at = f"line {mark.line + 1} column {mark.column + 1}: {problem}" if mark else error
            raise TaskError(f"{where} is not valid YAML: {_one_line(at)}") from None
        if not isinstance(raw, dict):
            raise TaskError(f"{where}: expected a mapping (kind, heldout or data, ...)")
        return cls(name, root / name, raw)

    def error(self, message: str) -> TaskError:
        """A TaskError naming the task.yaml."""
        return TaskError(f"{self.folder / 'task.yaml'}: {message}")

    def file(self, key: str) -> Path | None:
        """The key's file name joined to the task folder; it must name an existing file."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{key} must be a file name, got {value!r}")
        path = Path(os.path.normpath(self.folder / value))
        if not path.is_file():
            raise self.error(f"{key}: no such file {path}")
        return path

    def text(self, value: Any, key: str) -> str | None:
        """A prompt written out, or the name of a file in the task folder that holds it."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(f"{key} must be text or a file name, got {_kind_of(value)}")
        path = self.folder / value
        try:
            is_file = "\n" not in value and path.is_file()
        except (OSError, ValueError):  # too long, or otherwise impossible, as a file name
            is_file = False
        if is_file:
            return self.read_text(path)
        if len(value.split()) == 1 and Path(value).suffix in _PROMPT_SUFFIXES:
            raise self.error(f"{key}: no such file {Path(os.path.normpath(path))}")
        return value

    def read_text(self, path: Path) -> str:
        """A file's text, stripped (an unreadable file is load_task's one-line error)."""
        return path.read_text(encoding="utf-8").strip()


def _fields(spec: _Spec, kind: str) -> dict[str, str]:
    """The task's field names mapped onto the data file's keys (a name not given maps to itself)."""
    given = _names(spec, "fields", ROW_FIELDS[kind], f"{kind} task field")
    return {name: given.get(name, name) for name in ROW_FIELDS[kind]}


def _names(spec: _Spec, key: str, known: tuple[str, ...], what: str) -> dict[str, str]:
    """`key:` as a mapping of names from `known` to non-empty names."""
    value = spec.raw.get(key) or {}
    if not isinstance(value, dict) or not all(
        isinstance(name, str) and isinstance(to, str) and to for name, to in value.items()
    ):
        raise spec.error(f"{key} must map names to names, e.g. {{{known[0]}: ...}}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise spec.error(f"{key}: unknown {what} {unknown[0]!r} (known: {', '.join(known)})")
    return dict(value)


def numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every non-blank line of a JSONL file, parsed, with its line number; TaskError naming the
    line when one is not a JSON object, or when there is none."""
    if not path.is_file():
        raise TaskError(f"missing task data {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TaskError(f"cannot read {path}: {_one_line(error)}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskError(
                f"{path} line {number}: not valid JSON: {error.msg} (column {error.colno})"
            ) from None
        if not isinstance(row, dict):
            raise TaskError(f"{path} line {number}: expected a JSON object, got {_kind_of(row)}")
        rows.append((number, row))
    if not rows:
        raise TaskError(f"{path}: no examples (the file is empty)")
    return rows


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSONL file, parsed (see numbered_rows)."""
    return [row for _, row in numbered_rows(path)]


def _examples(
    path: Path, fields: Mapping[str, str], parse: Callable[..., EvalExample]
) -> tuple[EvalExample, ...]:
    """Each row of the held-out file as an example; ids must be unique."""
    examples: dict[str, EvalExample] = {}
    for index, (number, row) in enumerate(numbered_rows(path), start=1):
        where = f"{path} line {number}"
        example = parse(row, fields, where, f"{index:04d}")
        if example.id in examples:
            raise TaskError(f"{where}: id {example.id!r} occurs twice")
        examples[example.id] = example
    return tuple(examples.values())


def _value(row: Mapping[str, Any], name: str, fields: Mapping[str, str], where: str) -> Any:
    """The row's value for the task field `name`, read under the key `fields` maps it to."""
    key = fields[name]
    if key not in row:
        mapped = f" (fields maps {name} to {key!r})" if key != name else ""
        raise TaskError(f"{where}: no field {name!r}{mapped}")
    return row[key]


def _example_id(row: Mapping[str, Any], fields: Mapping[str, str], where: str, default: str) -> str:
    value = row.get(fields["id"], default)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TaskError(f"{where}: id must be a string or a number, got {_kind_of(value)}")
    return str(value)


def _behaviour_example(
    row: Mapping[str, Any], fields: Mapping[str, str], where: str, number: str
) -> EvalExample:
    """The turns before the last message (system messages dropped); the last one's JSON is gold."""
    messages = _value(row, "messages", fields, where)
    if not (isinstance(messages, list) and len(messages) >= 2 and all(map(_is_message, messages))):
        raise TaskError(f"{where}: messages must be a list of {{role, content}}, the gold last")
    if messages[-1]["role"] != "assistant":
        raise TaskError(f"{where}: the last message is {messages[-1]['role']!r}, not assistant")
    try:
        gold = json.loads(messages[-1]["content"])
    except json.JSONDecodeError as error:
        raise TaskError(f"{where}: the gold answer is not JSON: {error.msg}") from None
    if not isinstance(gold, dict):
        raise TaskError(f"{where}: the gold answer must be a JSON object, got {_kind_of(gold)}")
    turns = tuple(message for message in messages[:-1] if message["role"] != "system")
    if not turns:
        raise TaskError(f"{where}: no message before the gold answer")
    return EvalExample(_example_id(row, fields, where, f"h{number}"), turns, gold)


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and all(
        isinstance(message.get(key), str) for key in ("role", "content")
    )


def _question_example(
    row: Mapping[str, Any], fields: Mapping[str, str], where: str, number: str
) -> EvalExample:
    """A one-turn question whose reply must contain the answer (or one of the answers)."""
    question = _value(row, "question", fields, where)
    if not _filled(question):
        raise TaskError(f"{where}: question must be non-empty text, got {_kind_of(question)}")
    answer = _value(row, "answer", fields, where)
    answers = [answer] if isinstance(answer, str) else answer
    if not isinstance(answers, list) or not answers or not all(map(_filled, answers)):
        kind = _kind_of(answer)
        raise TaskError(f"{where}: answer must be text or a non-empty list of texts, got {kind}")
    source = row.get(fields["source"])
    if source is not None and not isinstance(source, str):
        raise TaskError(f"{where}: source must be a string, got {_kind_of(source)}")
    user = ({"role": "user", "content": question},)
    return EvalExample(_example_id(row, fields, where, f"q{number}"), user, answer, source)


def _filled(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _schema(spec: _Spec) -> dict[str, list[Any]]:
    """`{key: [allowed]}`, or `{keys: [ordered], values: {key: [allowed]}}`, as the former."""
    schema = spec.raw.get("schema") or {}
    if isinstance(schema, dict) and "values" in schema:
        values, keys = schema["values"], schema.get("keys", list(schema["values"] or ()))
        if not isinstance(values, dict) or not isinstance(keys, list):
            raise spec.error("schema: values must be a mapping and keys a list")
        missing = [key for key in keys if key not in values]
        if missing:
            raise spec.error(f"schema: key {missing[0]!r} has no values")
        schema = {key: values[key] for key in keys}
    if not isinstance(schema, dict) or not all(isinstance(v, list) for v in schema.values()):
        raise spec.error("schema must map each key to a list of allowed values")
    return {str(key): list(values) for key, values in schema.items()}


def _system_prompt(spec: _Spec, generation: Mapping[str, Any]) -> str | None:
    """`system_prompt_file`, else `system_prompt` (text or file), else generation's."""
    path = spec.file("system_prompt_file")
    if path is not None:
        if spec.raw.get("system_prompt") is not None:
            raise spec.error("give system_prompt or system_prompt_file, not both")
        return spec.read_text(path)
    if spec.raw.get("system_prompt") is not None:
        return spec.text(spec.raw.get("system_prompt"), "system_prompt")
    return spec.text(generation.get("system_prompt"), "generation.system_prompt")


def _output_schema(spec: _Spec) -> Path | None:
    """The JSON Schema file constrained decoding holds the output to."""
    path = spec.file("output_schema")
    if path is not None:
        try:
            schema = json.loads(spec.read_text(path))
        except json.JSONDecodeError as error:
            raise spec.error(f"output_schema {path} is not valid JSON: {error.msg}") from None
        if not isinstance(schema, dict):
            raise spec.error(f"output_schema {path} must hold a JSON Schema object")
    return path


def _count(spec: _Spec, value: Any, key: str) -> int | None:
    """A whole number >= 0; None when absent or 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise spec.error(f"{key} must be a whole number, got {value!r}")
    return value or None


def _stop(spec: _Spec, value: Any) -> tuple[str, ...]:
    """`generation.stop`: one stop string or a list of them."""
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise spec.error("generation.stop must be a string or a list of strings")
    return tuple(stops)


def _configurations(spec: _Spec) -> dict[str, str]:
    """Rung id -> the name of a configuration in the user's configurations file."""
    return _names(spec, "configurations", RUNGS, "rung")


def _kind_of(value: Any) -> str:
    """A value's JSON type, as an error message names it."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _one_line(error: object) -> str:
    return " ".join(str(error).split())
