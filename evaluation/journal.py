"""The run's journal: each answered example appended as one JSON line, read back on resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.tasks import Task


@dataclass
class ExampleResult:
    """The scored answer of one example under one configuration."""

    configuration: str
    example: str
    reply: dict[str, Any]
    scores: dict[str, float]


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
