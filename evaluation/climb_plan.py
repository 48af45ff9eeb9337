"""The rungs `ladder climb` walks: generated from a task's declared pieces, cheapest first.

A rung is a configuration. The task names its pieces (system prompt, few-shot pool, training split,
output schema, collection); each rung below the adapter is built from them, unless the task's
`configurations:` maps the rung to a configuration of the user's file, which is then used as it is.
Rungs are ordered by their estimated cost per call (prompt tokens at hosted prices), the ladder's
own order breaking ties, so the first rung that meets the target is also the cheapest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluation.pricing import PriceTable
from evaluation.tasks import RUNGS, Task, TaskError
from service.routing.configs import Configuration, ConfigurationError, resolve_configuration

# The rungs below the adapter, in the ladder's order: the ids a task's `configurations:` maps.
LOWER_RUNGS = RUNGS
FEW_SHOT_COUNT = 5
RAG = {"k": 4, "mode": "hybrid", "min_score": 0.1, "max_context_tokens": 700, "on_error": "fail"}
# Forced keys can take more tokens than the model's own spelling of them.
CONSTRAINED_EXTRA_TOKENS = 16


@dataclass(frozen=True)
class Rung:
    """One rung: the configuration it serves and, when generated, its definition."""

    id: str
    configuration: Configuration
    raw: dict[str, Any] | None = None  # the generated definition; None: the user's own
    variant: str = ""  # the adapter's training variant ("replay", "no-replay"); "" below

    @property
    def name(self) -> str:
        """The configuration's name, as requests call it."""
        return self.configuration.name

    @property
    def is_adapter(self) -> bool:
        """Whether the rung needs a trained adapter."""
        return self.configuration.adapter is not None

    def definition(self) -> str:
        """What identifies the rung's answers: a changed definition is evaluated anew."""
        return self.configuration.model_dump_json()


@dataclass
class Estimate:
    """A rung's expected tokens per call, cost per 1,000 calls and evaluation time."""

    prompt_tokens: float
    completion_tokens: float
    cost_per_1k: float
    seconds: float


@dataclass
class Plan:
    """The rungs to walk, in order, and those left out with the reason."""

    rungs: list[Rung]
    left_out: dict[str, str] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict)


def _generation(task: Task, constrained: bool = False) -> dict[str, Any]:
    tokens = task.max_tokens or 256
    generation: dict[str, Any] = {
        "max_tokens": tokens + (CONSTRAINED_EXTRA_TOKENS if constrained else 0)
    }
    if task.stop and not constrained:
        generation["stop"] = list(task.stop)
    return generation


def _similar_pool(task: Task) -> Path | None:
    """The pool similar few-shot chooses from: the training split, else a large few-shot pool."""
    if task.train is not None:
        return task.train
    if task.few_shot is not None and _rows(task.few_shot) > FEW_SHOT_COUNT:
        return task.few_shot
    return None


def _rows(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def generated_definitions(task: Task) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each lower rung's definition from the task's pieces; the rungs it cannot build, and why."""
    prompt = task.system_prompt
    found = _similar_pool(task)
    pool = found.resolve() if found is not None else None
    schema = task.output_schema.resolve() if task.output_schema is not None else None
    few_shot = task.few_shot.resolve() if task.few_shot is not None else None
    pieces: dict[str, tuple[str | None, dict[str, Any] | None]] = {
        "base": (None, {}),
        "prompt": ("no system prompt", {"system_prompt": prompt}),
        "few-shot": (
            "no few-shot pool",
            {"system_prompt": prompt, "few_shot": {"file": str(few_shot), "count": 5}},
        ),
        "few-shot-similar": (
            "no training split or few-shot pool larger than 5",
            {
                "system_prompt": prompt,
                "few_shot": {"file": str(pool), "count": FEW_SHOT_COUNT, "select": "similar"},
            },
        ),
        "constrained": (
            "no output schema",
            {"system_prompt": prompt, "output": {"json_schema_file": str(schema)}},
        ),
        "similar-constrained": (
            "no output schema or similar-example pool",
            {
                "system_prompt": prompt,
                "few_shot": {"file": str(pool), "count": FEW_SHOT_COUNT, "select": "similar"},
                "output": {"json_schema_file": str(schema)},
            },
        ),
        "rag": (
            "no collection (a knowledge task names one)",
            {"system_prompt": prompt, "retrieval": {"collection": task.collection, **RAG}},
        ),
    }
    needs = {
        "prompt": prompt is not None,
        "few-shot": prompt is not None and task.few_shot is not None,
        "few-shot-similar": prompt is not None and pool is not None,
        "constrained": prompt is not None and schema is not None,
        "similar-constrained": prompt is not None and schema is not None and pool is not None,
        "rag": prompt is not None and task.collection is not None,
    }
    made: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    for rung, (reason, raw) in pieces.items():
        if not needs.get(rung, True):
            missing[rung] = str(reason)
            continue
        assert raw is not None
        constrained = "output" in raw
        made[rung] = {**raw, "generation": _generation(task, constrained)}
    return made, missing


def rung_name(task: Task, rung: str) -> str:
    """A generated rung's configuration name: `<task>~<rung>`."""
    return f"{task.name}~{rung}"


def lower_rungs(task: Task, user: Mapping[str, Configuration]) -> tuple[list[Rung], dict[str, str]]:
    """The rungs below the adapter, in the ladder's order; the user's configurations where the
    task maps a rung to one."""
    made, missing = generated_definitions(task)
    rungs: list[Rung] = []
    for rung in LOWER_RUNGS:
        mapped = task.configurations.get(rung)
        if mapped is not None:
            if mapped not in user:
                missing[rung] = f"the task maps it to {mapped!r}, which the configurations lack"
                continue
            rungs.append(Rung(rung, user[mapped]))
            missing.pop(rung, None)
        elif rung in made:
            name = rung_name(task, rung)
            rungs.append(
                Rung(rung, resolve_configuration(name, made[rung], task.folder), made[rung])
            )
    return rungs, missing


def adapter_rung(
    task: Task, adapter_ref: str, variant: str, below: Rung | None, raw_of: Callable[[Rung], dict]
) -> Rung:
    """The adapter with the task's minimal prompt, or on top of a lower rung's layers."""
    if below is None:
        raw: dict[str, Any] = {
            "system_prompt": task.system_prompt_minimal or task.system_prompt,
            "generation": _generation(task),
        }
        rung_id = "adapter"
    else:
        raw = dict(raw_of(below))
        rung_id = f"adapter+{below.id}"
    raw["adapter"] = adapter_ref
    suffix = "" if variant == "replay" else f"~{variant}"
    name = rung_name(task, rung_id) + suffix
    try:
        configuration = resolve_configuration(name, raw, task.folder)
    except ConfigurationError as error:
        raise TaskError(f"task {task.name}: rung {rung_id}: {error}") from None
    return Rung(rung_id, configuration, raw, variant)


def raw_definition(rung: Rung, user_file: Path) -> dict[str, Any]:
    """A rung's definition as a configurations file holds it, its file paths absolute."""
    if rung.raw is not None:
        return dict(rung.raw)
    document = yaml.safe_load(user_file.read_text(encoding="utf-8"))
    raw = dict(document["configurations"][rung.name] or {})
    base = user_file.parent

    def absolute(value: str) -> str:
        path = Path(value)
        return str(path if path.is_absolute() else (base / path).resolve())

    if "system_prompt_file" in raw:
        raw["system_prompt_file"] = absolute(raw["system_prompt_file"])
    if isinstance(raw.get("few_shot"), dict) and "file" in raw["few_shot"]:
        raw["few_shot"] = {**raw["few_shot"], "file": absolute(raw["few_shot"]["file"])}
    if isinstance(raw.get("output"), dict) and "json_schema_file" in raw["output"]:
        raw["output"] = {
            **raw["output"],
            "json_schema_file": absolute(raw["output"]["json_schema_file"]),
        }
    raw.pop("description", None)
    return raw


def estimate(
    rung: Rung,
    task: Task,
    count_tokens: Callable[[str], int],
    prices: PriceTable,
    examples: int,
    speed: tuple[float, float],
) -> Estimate:
    """Tokens per call from the rung's pieces (the few-shot turns, the context budget, the mean
    held-out message), hosted cost per 1,000 calls, and the time to answer `examples` of them at
    `speed` = (prefill, decode) tokens per second."""
    config = rung.configuration
    prompt = float(count_tokens(config.system_prompt or ""))
    messages = [m["content"] for e in task.examples for m in e.messages if m["role"] == "user"]
    prompt += sum(count_tokens(m) for m in messages[:50]) / max(1, min(50, len(messages)))
    if config.few_shot is not None:
        shots = config.few_shot.examples[:200]
        per_shot = sum(count_tokens(s.user) + count_tokens(s.assistant) for s in shots)
        prompt += per_shot / max(1, len(shots)) * (config.few_shot.count or len(shots))
    if config.retrieval is not None:
        prompt += config.retrieval.max_context_tokens * 0.5
    prompt += 12  # the chat template's role markers
    golds = [e.gold for e in task.examples[:50]]
    completion = (
        sum(count_tokens(json.dumps(g) if not isinstance(g, str) else g) for g in golds)
        / max(1, len(golds))
        if golds and task.kind == "behaviour"
        else config.generation.max_tokens / 4
    )
    completion = min(completion + 2, float(config.generation.max_tokens))
    cost = prices.hosted_per_1k(prompt, completion, fine_tuned=config.adapter is not None)
    prefill, decode = speed
    seconds = examples * (prompt / prefill + completion / decode)
    return Estimate(prompt, completion, cost, seconds)


def order_by_cost(rungs: Sequence[Rung], estimates: Mapping[str, Estimate]) -> list[Rung]:
    """Cheapest first; the ladder's order breaks ties (base before prompt at equal cost)."""
    position = {rung_id: i for i, rung_id in enumerate(LOWER_RUNGS)}

    def key(rung: Rung) -> tuple[float, int]:
        found = estimates.get(rung.name)
        cost = found.cost_per_1k if found is not None else math.inf
        return (round(cost, 4), position.get(rung.id, len(position)))

    return sorted(rungs, key=key)
