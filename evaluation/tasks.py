"""Evaluation tasks: `corpus/tasks/<name>/task.yaml` says the kind, the data and the metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adapters.data import normalise_prompt

TaskKind = Literal["behaviour", "knowledge", "general"]


class TaskError(ValueError):
    """A task that cannot be loaded or run."""


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
    """A task's definition and its held-out examples."""

    name: str
    kind: TaskKind
    folder: Path
    examples: tuple[EvalExample, ...]
    primary_metric: str
    schema: dict[str, list[Any]] = field(default_factory=dict)
    k: int = 5
    system_prompt: str | None = None
    max_tokens: int | None = None


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSONL file, parsed."""
    if not path.is_file():
        raise TaskError(f"missing task data {path}")
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _behaviour_examples(path: Path) -> tuple[EvalExample, ...]:
    examples = []
    for number, row in enumerate(jsonl_rows(path), start=1):
        messages = row["messages"]
        examples.append(
            EvalExample(
                id=str(row.get("id", f"h{number:04d}")),
                messages=tuple(m for m in messages[:-1] if m["role"] != "system"),
                gold=json.loads(messages[-1]["content"]),
            )
        )
    return tuple(examples)


def _question_examples(path: Path) -> tuple[EvalExample, ...]:
    return tuple(
        EvalExample(
            id=str(row.get("id", f"q{number:04d}")),
            messages=({"role": "user", "content": row["question"]},),
            gold=row["answer"],
            source=row.get("source"),
        )
        for number, row in enumerate(jsonl_rows(path), start=1)
    )


def load_task(root: Path, name: str) -> Task:
    """Reads `root/<name>/task.yaml` and its held-out data."""
    folder = root / name
    spec_file = folder / "task.yaml"
    if not spec_file.is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "task.yaml").is_file())
        raise TaskError(f"no task {name!r} in {root} (known: {', '.join(known)})")
    spec = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    kind = spec.get("kind")
    if kind == "behaviour":
        examples = _behaviour_examples(folder / spec["heldout"])
    elif kind in ("knowledge", "general"):
        examples = _question_examples(folder / spec["data"])
    else:
        raise TaskError(f"task {name!r} has unknown kind {kind!r}")
    prompt_file = spec.get("system_prompt_file")
    schema = spec.get("schema") or {}
    if "values" in schema:  # {keys: [ordered], values: {key: allowed}}
        schema = {key: schema["values"][key] for key in schema.get("keys", schema["values"])}
    return Task(
        name=name,
        kind=kind,
        folder=folder,
        examples=examples,
        primary_metric=str(spec.get("primary_metric", "contains_answer")),
        schema={key: list(values) for key, values in schema.items()},
        k=int(spec.get("k", 5)),
        system_prompt=(
            (folder / prompt_file).read_text().strip()
            if prompt_file
            else spec.get("system_prompt") or (spec.get("generation") or {}).get("system_prompt")
        ),
        max_tokens=int((spec.get("generation") or {}).get("max_new_tokens", 0)) or None,
    )
