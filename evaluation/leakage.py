"""Held-out examples found in an adapter's training data: the evaluation refuses to run on them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from adapters.data import normalise_prompt
from adapters.registry import AdapterRegistry, RegistryError
from evaluation.tasks import Task, TaskError, jsonl_rows


def training_prompts(path: Path) -> set[str]:
    """The normalised user text of every example of a chat-format training file."""
    return {normalise_prompt(row.get("messages", [])) for row in jsonl_rows(path)}


def check_leakage(
    task: Task, adapters: Mapping[str, str | None], registry: AdapterRegistry
) -> None:
    """Raises TaskError when an adapter was trained on held-out examples of the task."""
    held = {example.prompt_key for example in task.examples}
    for configuration, ref in adapters.items():
        if not ref:
            continue
        try:
            source = registry.resolve(ref).manifest().get("training_data", {}).get("path")
        except RegistryError:
            continue
        if source and Path(source).is_file():
            leaked = held & training_prompts(Path(source))
            if leaked:
                raise TaskError(
                    f"{len(leaked)} held-out examples of {task.name!r} are in the training data of"
                    f" {ref} (configuration {configuration!r}): refusing to evaluate"
                )
