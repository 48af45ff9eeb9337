"""The ladder evaluation: every configuration over a task's held-out examples, resumably.

Each answered example is appended to a JSONL journal keyed by the run (task, configurations and
their definitions, seed, limit); a killed run reads the journal back and continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from evaluation import metrics
from evaluation.tasks import EvalExample, Task


@dataclass(frozen=True)
class Reply:
    """One answer from the service, with what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    few_shot_tokens: int
    context_tokens: int
    latency_s: float
    sources: tuple[str, ...] = ()


class Backend(Protocol):
    """Sends a conversation to a configuration: in process or over HTTP."""

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        """One chat completion."""
        ...


@dataclass
class ExampleResult:
    """The scored answer of one example under one configuration."""

    configuration: str
    example: str
    reply: dict[str, Any]
    scores: dict[str, float]


def score(task: Task, example: EvalExample, reply: Reply) -> dict[str, float]:
    """The task's metrics for one answer, each 0/1 or a score in [0, 1]."""
    if task.kind == "behaviour":
        fields = metrics.field_accuracy(reply.text, example.gold)
        scores = {f"field_{name}": float(right) for name, right in fields.items()}
        scores["format_validity"] = float(metrics.format_valid(reply.text, task.schema))
        scores["field_accuracy"] = sum(fields.values()) / max(1, len(fields))
        return scores
    scores = {"contains_answer": float(metrics.contains_answer(reply.text, example.gold))}
    if task.kind == "knowledge" and reply.sources and example.source:
        scores[f"hit_at_{task.k}"] = float(metrics.hit_at_k(reply.sources, example.source, task.k))
        scores["mrr"] = metrics.reciprocal_rank(reply.sources, example.source)
    return scores


def select_examples(task: Task, limit: int | None, seed: int) -> list[EvalExample]:
    """A seeded sample of the held-out examples (all of them without a limit)."""
    chosen = list(task.examples)
    if limit is not None and limit < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, limit), key=lambda e: e.id)
    return chosen


def run_key(task: Task, definitions: Mapping[str, str], seed: int, limit: int | None) -> str:
    """Identifies a run: a journal is reused only for the very same run."""
    material = json.dumps([task.name, sorted(definitions.items()), seed, limit], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass
class Journal:
    """Finished examples of a run, on disk, appended one line at a time."""

    path: Path
    done: dict[tuple[str, str], ExampleResult] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Journal:
        """Reads what an earlier, possibly killed, run finished; a torn last line is dropped."""
        journal = cls(path)
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    result = ExampleResult(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue
                journal.done[(result.configuration, result.example)] = result
        return journal

    def add(self, result: ExampleResult) -> None:
        """Appends and flushes one result."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")
            handle.flush()
        self.done[(result.configuration, result.example)] = result


def evaluate(
    task: Task,
    configurations: Sequence[str],
    backend: Backend,
    journal: Journal,
    examples: Sequence[EvalExample],
    seed: int,
    on_result: Callable[[ExampleResult, bool], None] | None = None,
) -> dict[str, list[ExampleResult]]:
    """Answers every example under every configuration; journaled ones are not asked again."""
    results: dict[str, list[ExampleResult]] = {name: [] for name in configurations}
    for name in configurations:
        for example in examples:
            known = journal.done.get((name, example.id))
            fresh = known is None
            if known is None:
                reply = backend.chat(name, example.messages, seed)
                known = ExampleResult(name, example.id, asdict(reply), score(task, example, reply))
                journal.add(known)
            results[name].append(known)
            if on_result is not None:
                on_result(known, fresh)
    return results
